package rooms

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/mimi/matrixcontent"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/remote"
)

const (
	putSealedQuery = `INSERT INTO mimi_rooms_media_out (content_id, sealed, created_at) VALUES ($1, $2, $3)`
	getSealedQuery = `SELECT sealed FROM mimi_rooms_media_out WHERE content_id=$1`
	getCopyQuery   = `SELECT local_uri, size FROM mimi_rooms_media_in WHERE url=$1 AND content_hash=$2`
	putCopyQuery   = `
		INSERT INTO mimi_rooms_media_in (url, content_hash, local_uri, size, created_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (url, content_hash) DO NOTHING
	`
)

// The external parts this side makes: AES-128-GCM (the draft's mandatory algorithm) over the file, SHA-256 over the
// sealed object.
const (
	sealAlg = content.AEADAES128GCM
	hashAlg = content.HashSHA256
)

// fetchAttempts and fetchBackoff bound how long an unreachable provider holds up the room's inbox with the message
// that carries its file: then the message crosses as a notice saying so, as media does for LM.
const (
	fetchAttempts = 3
	fetchBackoff  = time.Second
)

// aeadOverhead is what sealing adds to a file (the tag of each algorithm mimi/content implements): a file at the
// limit still crosses, and Upload holds the plaintext to the limit.
const aeadOverhead = 16

var (
	// ErrMediaRefused means a file that cannot cross for good (over the limit, unknown where it is hosted, refused by
	// the homeserver, failing its hash). Media implementations wrap it in such errors; their others are retried.
	ErrMediaRefused = errors.New("the file cannot be bridged")
	// ErrNoMedia means a file to carry on a bridge without Media configured.
	ErrNoMedia = errors.New("attachments are not bridged to MIMI here")
)

// Media is the homeserver's media repository as the MIMI side needs it (the media package's Mapper, with ghosts
// named as cmd/lmbridge names them).
type Media interface {
	// Download reads a homeserver file whole by its content URI.
	Download(ctx context.Context, uri string) (data []byte, mimetype string, err error)
	// Upload puts a file on the homeserver as the Matrix user standing for a MIMI user (in Matrix form) and returns
	// its content URI.
	Upload(ctx context.Context, uploader remote.UserID, data []byte, mimetype, filename string) (string, error)
	// MaxBytes is the largest file that crosses.
	MaxBytes() int64
}

// errMediaLater is a media failure worth trying again (the homeserver did not answer): the send is not refused.
type errMediaLater struct{ err error }

func (e *errMediaLater) Error() string { return e.err.Error() }
func (e *errMediaLater) Unwrap() error { return e.err }

// sealMedia makes the external part of a Matrix file: downloaded from the homeserver (decrypted first if the event
// carried it encrypted), sealed under a fresh key, and stored to be served under a fresh ID at the provider's URL.
func (r *Rooms) sealMedia(ctx context.Context, c *event.MessageEventContent) (*content.ExternalPart, error) {
	if r.media == nil {
		return nil, ErrNoMedia
	}
	uri := string(c.URL)
	if c.File != nil {
		uri = string(c.File.URL)
	}
	data, mimetype, err := r.media.Download(ctx, uri)
	if err != nil && !errors.Is(err, ErrMediaRefused) {
		return nil, &errMediaLater{err}
	} else if err != nil {
		return nil, err
	}
	if c.File != nil {
		if err = c.File.DecryptInPlace(data); err != nil {
			return nil, fmt.Errorf("%w: decrypting the attachment: %w", ErrMediaRefused, err)
		}
	}
	if c.Info != nil && c.Info.MimeType != "" {
		mimetype = c.Info.MimeType
	}
	sealed, err := content.SealExternal(nil, sealAlg, hashAlg, data, nil)
	if err != nil {
		return nil, err
	}
	var idb [16]byte
	if _, err = rand.Read(idb[:]); err != nil {
		return nil, err
	}
	contentID := hex.EncodeToString(idb[:])
	if _, err = r.db.Exec(ctx, putSealedQuery, contentID, sealed.Ciphertext, time.Now().UnixMilli()); err != nil {
		return nil, &errMediaLater{fmt.Errorf("storing a sealed file: %w", err)}
	}
	part := sealed.Part
	part.URL = r.p.ContentURL(contentID)
	part.ContentType = mimetype
	zerolog.Ctx(ctx).Debug().Str("content_id", contentID).Int("size", len(data)).Msg("Sealed a Matrix file for MIMI")
	return &part, nil
}

// externalContent is what the provider serves at a ContentURL.
func (r *Rooms) externalContent(ctx context.Context, contentID string) ([]byte, error) {
	var sealed []byte
	err := r.db.QueryRow(ctx, getSealedQuery, contentID).Scan(&sealed)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, provider.ErrUnknownContent
	} else if err != nil {
		return nil, fmt.Errorf("reading sealed file %s: %w", contentID, err)
	}
	return sealed, nil
}

// FetchExternal fetches an external part another provider hosts, over this provider's mutual TLS, at most maxBytes
// of it, and returns the plaintext once its size and content hash are verified and it is decrypted. Only https URLs
// are fetched.
func (r *Rooms) FetchExternal(ctx context.Context, part *content.ExternalPart, maxBytes int64) ([]byte, error) {
	if u, err := url.Parse(part.URL); err != nil || u.Scheme != "https" {
		return nil, fmt.Errorf("fetching external content: %w: %q is not an https URL", content.ErrUnsupportedURL, part.URL)
	}
	return part.Fetch(ctx, r.p.PeerClient(), maxBytes, time.Now())
}

// unsealMedia brings an external part to the homeserver as sender's Matrix user, once per URL and content hash.
func (r *Rooms) unsealMedia(ctx context.Context, sender remote.UserID, part *content.ExternalPart) (matrixcontent.Uploaded, error) {
	if r.media == nil {
		return matrixcontent.Uploaded{}, fmt.Errorf("%w: %w", ErrMediaRefused, ErrNoMedia)
	}
	hash := part.ContentHash
	if hash == nil {
		hash = []byte{}
	}
	var local string
	var size int
	err := r.db.QueryRow(ctx, getCopyQuery, part.URL, hash).Scan(&local, &size)
	if err == nil {
		return matrixcontent.Uploaded{URL: id.ContentURIString(local), Size: size}, nil
	} else if !errors.Is(err, sql.ErrNoRows) {
		return matrixcontent.Uploaded{}, fmt.Errorf("looking up the copy of %s: %w", part.URL, err)
	}
	log := zerolog.Ctx(ctx).With().Str("external_url", part.URL).Logger()
	var data []byte
	for attempt := 1; ; attempt++ {
		data, err = r.FetchExternal(ctx, part, r.media.MaxBytes()+aeadOverhead)
		if err == nil {
			break
		}
		if !errors.Is(err, content.ErrFetch) {
			return matrixcontent.Uploaded{}, fmt.Errorf("%w: %w", ErrMediaRefused, err)
		}
		if attempt == fetchAttempts {
			return matrixcontent.Uploaded{}, fmt.Errorf("%w: its provider did not give it (%d tries): %w", ErrMediaRefused, attempt, err)
		}
		log.Debug().Err(err).Int("attempt", attempt).Msg("Failed to fetch external content, trying again")
		select {
		case <-ctx.Done():
			return matrixcontent.Uploaded{}, ctx.Err()
		case <-time.After(fetchBackoff * time.Duration(attempt)):
		}
	}
	if int64(len(data)) > r.media.MaxBytes() {
		return matrixcontent.Uploaded{}, fmt.Errorf("%w: %w: %d bytes, %d allowed", ErrMediaRefused, content.ErrExternalTooLarge,
			len(data), r.media.MaxBytes())
	}
	filename := part.Filename
	if filename == "" {
		filename = part.Description
	}
	local, err = r.media.Upload(ctx, sender, data, part.ContentType, filename)
	if err != nil {
		return matrixcontent.Uploaded{}, err
	}
	if _, err = r.db.Exec(ctx, putCopyQuery, part.URL, hash, local, len(data), time.Now().UnixMilli()); err != nil {
		return matrixcontent.Uploaded{}, fmt.Errorf("recording the copy of %s: %w", part.URL, err)
	}
	log.Debug().Str("local_uri", local).Int("size", len(data)).Msg("Copied external content to the homeserver")
	return matrixcontent.Uploaded{URL: id.ContentURIString(local), Size: len(data)}, nil
}
