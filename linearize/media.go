package linearize

import (
	"errors"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// mediaClientTimeout bounds one media fetch, the file included, as long as the serving side's write timeout for it
// (federation's mediaWriteTimeout).
const mediaClientTimeout = 5 * time.Minute

// errNoFederationServer means the engine's federation handler was replaced by one that has no media endpoints.
var errNoFederationServer = errors.New("the engine's federation handler is not a federation.Server")

// ServeMedia answers the federation media endpoints on the engine's listener from src (the homeserver's media
// repository, for lmbridge). Call it before Start.
func (e *Engine) ServeMedia(src federation.MediaSource) error {
	srv, ok := e.handler.(*federation.Server)
	if !ok {
		return errNoFederationServer
	}
	srv.ServeMedia(src)
	return nil
}

// NewMediaClient is a federation client signing as this engine, for fetching other servers' media. It is a client of
// its own, not the engine's: files are far larger than federation answers and take longer, and a pool of its own
// keeps them from holding up the connections events travel on.
func (e *Engine) NewMediaClient() *federation.Client {
	return federation.NewClient(e.serverName, e.key, federation.ClientOptions{AllowHTTPPeers: e.cfg.AllowHTTPPeers,
		BlockedRanges: e.cfg.BlockedRanges(), Timeout: mediaClientTimeout})
}
