package media

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// homeserverSource serves the homeserver's files to LM servers, fetched with the application service's token from
// the authenticated media API (Matrix v1.11), or the legacy /_matrix/media/v3 on a homeserver without it.
type homeserverSource struct {
	cli      *mautrix.Client
	domain   string
	maxBytes int64
}

var _ federation.MediaSource = (*homeserverSource)(nil)

func (h *homeserverSource) Download(ctx context.Context, origin, mediaID string) (*federation.MediaFile, error) {
	return h.get(ctx, mediaID, mautrix.ClientURLPath{"v1", "media", "download", h.domain, mediaID},
		mautrix.MediaURLPath{"v3", "download", h.domain, mediaID}, nil)
}

func (h *homeserverSource) Thumbnail(ctx context.Context, origin, mediaID string, thumb federation.Thumbnail) (*federation.MediaFile, error) {
	query := map[string]string{"width": strconv.Itoa(thumb.Width), "height": strconv.Itoa(thumb.Height)}
	if thumb.Method != "" {
		query["method"] = thumb.Method
	}
	if thumb.Animated {
		query["animated"] = "true"
	}
	return h.get(ctx, mediaID, mautrix.ClientURLPath{"v1", "media", "thumbnail", h.domain, mediaID},
		mautrix.MediaURLPath{"v3", "thumbnail", h.domain, mediaID}, query)
}

func (h *homeserverSource) get(ctx context.Context, mediaID string, authed, legacy mautrix.PrefixableURLPath, query map[string]string) (*federation.MediaFile, error) {
	resp, err := h.do(ctx, h.cli.BuildURLWithQuery(authed, query))
	if isUnrecognized(err) {
		zerolog.Ctx(ctx).Debug().Msg("Homeserver has no authenticated media API, using the legacy one")
		resp, err = h.do(ctx, h.cli.BuildURLWithQuery(legacy, query))
	}
	if err != nil {
		return nil, homeserverRefusal(ctx, mediaID, err)
	}
	if resp.ContentLength > h.maxBytes {
		resp.Body.Close()
		return nil, federation.Errorf(http.StatusBadGateway, federation.ErrCodeTooLarge,
			"The file is larger than this server serves (%d bytes)", h.maxBytes)
	}
	size := resp.ContentLength
	if size < 0 {
		size = -1
	}
	return &federation.MediaFile{ContentType: resp.Header.Get("Content-Type"),
		Disposition: resp.Header.Get("Content-Disposition"), Size: size,
		// A file longer than its headers said breaks off at the bound rather than going out whole.
		Body: http.MaxBytesReader(nil, resp.Body, h.maxBytes)}, nil
}

func (h *homeserverSource) do(ctx context.Context, url string) (*http.Response, error) {
	_, resp, err := h.cli.MakeFullRequestWithResp(ctx, mautrix.FullRequest{Method: http.MethodGet, URL: url,
		DontReadResponse: true, MaxAttempts: 1})
	return resp, err
}

// isUnrecognized says the homeserver does not know the endpoint (Synapse and Dendrite answer 404 M_UNRECOGNIZED, or
// 405 for a path another method has).
func isUnrecognized(err error) bool {
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil {
		return false
	}
	switch httpErr.Response.StatusCode {
	case http.StatusNotFound:
		return httpErr.RespError == nil || httpErr.RespError.ErrCode == mautrix.MUnrecognized.ErrCode
	case http.StatusMethodNotAllowed:
		return true
	}
	return false
}

// homeserverRefusal is the federation answer for a homeserver error: its 4xx Matrix errors pass on (M_NOT_FOUND for a
// file it does not have), anything else is a 502, with the details in our log.
func homeserverRefusal(ctx context.Context, mediaID string, err error) error {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.Response != nil {
		status := httpErr.Response.StatusCode
		if status == http.StatusNotFound {
			return federation.Errorf(http.StatusNotFound, federation.ErrCodeNotFound, "No media with that ID here")
		}
		if status >= 400 && status < 500 && httpErr.RespError != nil {
			return federation.Errorf(status, httpErr.RespError.ErrCode, "%s", httpErr.RespError.Err)
		}
	}
	zerolog.Ctx(ctx).Warn().Err(err).Str("media_id", mediaID).Msg("Failed to fetch a file from the homeserver")
	return federation.Errorf(http.StatusBadGateway, federation.ErrCodeUnknown, "The homeserver did not give the file")
}
