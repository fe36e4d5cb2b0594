// Package media carries files between the homeserver and LM servers, as the mautrix bridges carry them to and from
// their networks: a content URI alone cannot cross, since neither side may fetch the other's media. Towards LM, the
// homeserver's files are served on the federation listener (Matrix's federation media API, X-Matrix signed) under
// the bridge's LM server name; from LM, a file is fetched from the server its URI names, once, and uploaded to the
// homeserver as the sender's ghost, and the URI in the event becomes the copy's.
package media

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"golang.org/x/sync/singleflight"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// fetchAttempts and fetchBackoff bound how long an unreachable origin holds up the event that carries its file: then
// the event crosses no more than its file would, and its sender is told.
const (
	fetchAttempts = 3
	fetchBackoff  = 2 * time.Second
)

// Params are what New needs.
type Params struct {
	Config config.Media
	// HomeserverDomain is the homeserver's server name: the authority of the URIs it serves.
	HomeserverDomain string
	// LMServerName is the bridge's LM server name: the authority under which LM servers fetch the homeserver's files.
	LMServerName string
	DB           *dbutil.Database
	// AS uploads copies as ghosts and fetches the homeserver's files as the bot.
	AS *appservice.AppService
	// Fetcher fetches LM servers' files; linearize.Engine.NewMediaClient is the real one.
	Fetcher Fetcher
	Now     func() time.Time
}

// Fetcher fetches a file from an LM server's media repository (*federation.Client).
type Fetcher interface {
	DownloadMedia(ctx context.Context, destination, mediaID string, maxBytes int64) (*federation.MediaFile, error)
}

// Mapper is the bridge.MediaMapper of lmbridge.
type Mapper struct {
	hsDomain string
	lmServer string
	maxBytes int64
	store    *store
	as       *appservice.AppService
	fetch    Fetcher
	now      func() time.Time
	// flight makes a file that two events carry at once (an avatar in every room) one fetch and one upload.
	flight singleflight.Group
}

var _ bridge.MediaMapper = (*Mapper)(nil)

// New makes a Mapper; call Upgrade before using it.
func New(p Params) (*Mapper, error) {
	if p.DB == nil || p.AS == nil || p.Fetcher == nil || p.HomeserverDomain == "" || p.LMServerName == "" {
		return nil, errors.New("media needs a database, the appservice, a fetcher and both server names")
	}
	m := &Mapper{hsDomain: p.HomeserverDomain, lmServer: p.LMServerName, maxBytes: p.Config.MaxFileBytes,
		store: newStore(p.DB), as: p.AS, fetch: p.Fetcher, now: p.Now}
	if m.maxBytes <= 0 {
		m.maxBytes = config.DefaultMaxFileBytes
	}
	if m.now == nil {
		m.now = time.Now
	}
	return m, nil
}

// Upgrade brings the media tables to the latest version.
func (m *Mapper) Upgrade(ctx context.Context) error {
	return m.store.upgrade(ctx)
}

// MaxBytes is the largest file that crosses (media.max_file_bytes).
func (m *Mapper) MaxBytes() int64 { return m.maxBytes }

// Source is the homeserver's media repository as the federation media endpoints serve it.
func (m *Mapper) Source() federation.MediaSource {
	return &homeserverSource{cli: m.as.Client(), domain: m.hsDomain, maxBytes: m.maxBytes}
}

// ToLM names a homeserver file by the bridge's LM server, which serves it; any other URI is left as it is.
func (m *Mapper) ToLM(uri string) string {
	parsed, err := id.ParseContentURI(uri)
	if err != nil || parsed.Homeserver != m.hsDomain {
		return uri
	}
	return id.ContentURI{Homeserver: m.lmServer, FileID: parsed.FileID}.String()
}

// ToDAG returns the homeserver copy of an LM server's file, making it the first time. A URI under our own LM name is
// a homeserver file come back, and needs no copy.
func (m *Mapper) ToDAG(ctx context.Context, uri string, uploader id.UserID, hint bridge.MediaHint) (string, error) {
	parsed, err := id.ParseContentURI(uri)
	if err != nil || parsed.Homeserver == "" || parsed.FileID == "" {
		return "", fmt.Errorf("%w: %q is not a content URI", bridge.ErrMediaRefused, uri)
	}
	switch parsed.Homeserver {
	case m.lmServer:
		return id.ContentURI{Homeserver: m.hsDomain, FileID: parsed.FileID}.String(), nil
	case m.hsDomain:
		return uri, nil
	}
	local, err := m.store.local(ctx, uri)
	if err != nil || local != "" {
		return local, err
	}
	out, err, _ := m.flight.Do(uri, func() (any, error) {
		// The one that fetches may have lost the race to one that just finished.
		if local, err := m.store.local(ctx, uri); err != nil || local != "" {
			return local, err
		}
		return m.copyFile(ctx, parsed, uploader, hint)
	})
	if err != nil {
		return "", err
	}
	return out.(string), nil
}

// copyFile fetches an LM server's file and uploads it to the homeserver as uploader, and records the copy.
func (m *Mapper) copyFile(ctx context.Context, origin id.ContentURI, uploader id.UserID, hint bridge.MediaHint) (string, error) {
	log := zerolog.Ctx(ctx).With().Stringer("origin_uri", origin).Logger()
	var file *federation.MediaFile
	var err error
	for attempt := 1; ; attempt++ {
		file, err = m.fetch.DownloadMedia(ctx, origin.Homeserver, origin.FileID, m.maxBytes)
		if err == nil {
			break
		}
		if refusal := fetchRefusal(origin, err, m.maxBytes); refusal != nil {
			return "", refusal
		}
		if attempt == fetchAttempts {
			return "", fmt.Errorf("%w: %s did not answer for it (%d tries): %w", bridge.ErrMediaRefused,
				origin.Homeserver, attempt, err)
		}
		log.Debug().Err(err).Int("attempt", attempt).Msg("Failed to fetch a file from its LM server, trying again")
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(fetchBackoff * time.Duration(attempt)):
		}
	}
	mimetype := file.ContentType
	if mimetype == "" || mimetype == "application/octet-stream" {
		mimetype = hint.MimeType
	}
	local, err := m.upload(ctx, uploader, file.Data, mimetype, fileName(file.Disposition, hint.FileName))
	if err != nil {
		return "", err
	}
	if err = m.store.put(ctx, origin.String(), local, mimetype, int64(len(file.Data)), m.now()); err != nil {
		return "", err
	}
	log.Debug().Str("local_uri", local).Int("size", len(file.Data)).Msg("Copied a file from its LM server")
	return local, nil
}

// fetchRefusal is the refusal a fetch error means for good, nil for one worth trying again.
func fetchRefusal(origin id.ContentURI, err error, maxBytes int64) error {
	if errors.Is(err, federation.ErrMediaTooLarge) {
		return fmt.Errorf("%w: it is larger than this bridge's limit of %d bytes", bridge.ErrMediaRefused, maxBytes)
	}
	var fedErr *federation.Error
	if errors.As(err, &fedErr) && ((fedErr.Status >= 400 && fedErr.Status < 500 && fedErr.Status != http.StatusTooManyRequests) ||
		fedErr.ErrCode == federation.ErrCodeTooLarge) {
		return fmt.Errorf("%w: %s refused it (%s %s)", bridge.ErrMediaRefused, origin.Homeserver, fedErr.ErrCode, fedErr.Message)
	}
	return nil
}

// upload puts a copy on the homeserver as uploader, registering the ghost first: the homeserver refuses an upload
// for an application service user it does not know.
func (m *Mapper) upload(ctx context.Context, uploader id.UserID, data []byte, mimetype, name string) (string, error) {
	var in *appservice.Intent
	if uploader == m.as.BotUserID() {
		in = m.as.Bot()
	} else {
		var err error
		if in, err = m.as.Ghost(uploader); err != nil {
			return "", err
		}
	}
	if err := in.EnsureRegistered(ctx); err != nil {
		return "", fmt.Errorf("failed to register %s: %w", uploader, err)
	}
	resp, err := in.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: mimetype, FileName: name})
	if err != nil {
		var httpErr mautrix.HTTPError
		if errors.As(err, &httpErr) && httpErr.Response != nil && httpErr.Response.StatusCode >= 400 &&
			httpErr.Response.StatusCode < 500 && httpErr.Response.StatusCode != http.StatusTooManyRequests {
			return "", fmt.Errorf("%w: the homeserver refused the upload: %w", bridge.ErrMediaRefused, err)
		}
		return "", fmt.Errorf("failed to upload a copy as %s: %w", uploader, err)
	}
	return resp.ContentURI.String(), nil
}

// fileName is the name the origin gave in Content-Disposition, else the event's.
func fileName(disposition, fallback string) string {
	if _, params, err := mime.ParseMediaType(disposition); err == nil && params["filename"] != "" {
		return params["filename"]
	}
	return fallback
}
