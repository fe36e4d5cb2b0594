package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// Download reads a homeserver file whole (for a protocol that carries files as bytes, such as MIMI's sealed
// external parts), by its homeserver URI or the one ToLM made of it, through the same authenticated media fetch
// that serves LM servers. A file over the limit, not a homeserver file, or one the homeserver does not have is
// refused for good (bridge.ErrMediaRefused).
func (m *Mapper) Download(ctx context.Context, uri string) (data []byte, mimetype string, err error) {
	parsed, err := id.ParseContentURI(uri)
	if err != nil || parsed.FileID == "" || (parsed.Homeserver != m.hsDomain && parsed.Homeserver != m.lmServer) {
		return nil, "", fmt.Errorf("%w: %q is not a file of this homeserver", bridge.ErrMediaRefused, uri)
	}
	src := &homeserverSource{cli: m.as.Client(), domain: m.hsDomain, maxBytes: m.maxBytes}
	file, err := src.Download(ctx, m.hsDomain, parsed.FileID)
	if err != nil {
		var fedErr *federation.Error
		if errors.As(err, &fedErr) && fedErr.Status < http.StatusInternalServerError {
			return nil, "", fmt.Errorf("%w: the homeserver refused it (%s %s)", bridge.ErrMediaRefused, fedErr.ErrCode, fedErr.Message)
		} else if errors.As(err, &fedErr) && fedErr.ErrCode == federation.ErrCodeTooLarge {
			return nil, "", fmt.Errorf("%w: it is larger than this bridge's limit of %d bytes", bridge.ErrMediaRefused, m.maxBytes)
		}
		return nil, "", fmt.Errorf("failed to download %s from the homeserver: %w", uri, err)
	}
	defer file.Body.Close()
	data, err = io.ReadAll(file.Body)
	var tooLarge *http.MaxBytesError
	if errors.As(err, &tooLarge) {
		return nil, "", fmt.Errorf("%w: it is larger than this bridge's limit of %d bytes", bridge.ErrMediaRefused, m.maxBytes)
	} else if err != nil {
		return nil, "", fmt.Errorf("failed to read %s from the homeserver: %w", uri, err)
	}
	return data, file.ContentType, nil
}

// Upload puts a file on the homeserver as uploader (registered first if a ghost) and returns its URI; a refusal by
// the homeserver is for good (bridge.ErrMediaRefused).
func (m *Mapper) Upload(ctx context.Context, uploader id.UserID, data []byte, mimetype, name string) (string, error) {
	if int64(len(data)) > m.maxBytes {
		return "", fmt.Errorf("%w: it is larger than this bridge's limit of %d bytes", bridge.ErrMediaRefused, m.maxBytes)
	}
	return m.upload(ctx, uploader, data, mimetype, name)
}
