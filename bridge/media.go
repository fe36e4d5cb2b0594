package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"
)

// ErrMediaRefused means a file cannot cross for good (over the size limit, unknown at its origin): the event that
// carries it is refused with a notice to its sender. A MediaMapper's other errors are retried.
var ErrMediaRefused = errors.New("its file cannot be bridged")

// MediaHint is what an event says about a file, for the upload of a copy.
type MediaHint struct {
	MimeType string
	FileName string
}

// MediaMapper carries files across, which content URIs alone cannot: a homeserver cannot fetch an LM server's
// media, nor an LM server the homeserver's. The media package is the real one; without one (Params.Media nil) URIs
// cross as they are.
type MediaMapper interface {
	// ToLM returns the URI under which LM servers fetch a homeserver file (from our federation listener).
	ToLM(uri string) string
	// ToDAG returns the homeserver URI of an LM server's file, fetching it and uploading it as uploader the first
	// time it is seen.
	ToDAG(ctx context.Context, uri string, uploader id.UserID, hint MediaHint) (string, error)
	// MaxBytes is the largest file that crosses.
	MaxBytes() int64
}

// mediaFields are where content holds content URIs: a file's url and its thumbnail's (plain and encrypted
// attachments), a member's avatar_url, and m.room.avatar's url; an edit's m.new_content has the same.
var mediaFields = [][]string{{"url"}, {"file", "url"}, {"info", "thumbnail_url"}, {"info", "thumbnail_file", "url"},
	{"avatar_url"}}

// sizeFields are the sizes an event gives for its file and its thumbnail.
var sizeFields = [][]string{{"info", "size"}, {"info", "thumbnail_info", "size"}}

// mediaToLM rewrites the homeserver URIs in content to the ones LM servers fetch, refusing a file the event says is
// over the limit: the sender hears of it now, not the receivers when they fail to fetch it.
func (br *Bridge) mediaToLM(c Content) error {
	if br.media == nil {
		return nil
	}
	return walkMedia(c, func(path []string, uri string) (string, error) {
		return br.media.ToLM(uri), nil
	}, func(size float64) error {
		if int64(size) > br.media.MaxBytes() {
			return fmt.Errorf("%w: it is %s, over this bridge's limit of %s", ErrMediaRefused, byteSize(int64(size)),
				byteSize(br.media.MaxBytes()))
		}
		return nil
	})
}

// mediaToDAG rewrites the LM servers' URIs in content to homeserver copies uploaded as uploader.
func (br *Bridge) mediaToDAG(ctx context.Context, c Content, uploader id.UserID) error {
	if br.media == nil {
		return nil
	}
	return walkMedia(c, func(path []string, uri string) (string, error) {
		hint := MediaHint{}
		if path[len(path)-1] == "url" && (len(path) == 1 || path[0] == "file") {
			// The file itself: the event's own mimetype and name go with it; a thumbnail's are the homeserver's.
			hint.MimeType, _ = walkPath(c, "info", "mimetype").(string)
			if hint.FileName, _ = c["filename"].(string); hint.FileName == "" {
				hint.FileName, _ = c["body"].(string)
			}
		}
		return br.media.ToDAG(ctx, uri, uploader, hint)
	}, nil)
}

// avatarToLM is a member's avatar as LM servers fetch it.
func (br *Bridge) avatarToLM(uri string) string {
	if br.media == nil || uri == "" {
		return uri
	}
	return br.media.ToLM(uri)
}

// avatarOut is a Matrix user's avatar as the protocol pr carries it: served to LM servers by lmbridge for LM; as it
// is for MIMI, which has no media path yet.
func (br *Bridge) avatarOut(pr *protocol, uri string) string {
	if pr != br.lmProto {
		return uri
	}
	return br.avatarToLM(uri)
}

// avatarToDAG is an LM user's avatar as a homeserver copy, or "" when it cannot be had: a ghost without its avatar is
// better than a ghost that does not join.
func (br *Bridge) avatarToDAG(ctx context.Context, uri string, ghost id.UserID) string {
	if br.media == nil || uri == "" {
		return uri
	}
	local, err := br.media.ToDAG(ctx, uri, ghost, MediaHint{})
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("avatar_url", uri).Stringer("ghost", ghost).
			Msg("Failed to bring an LM user's avatar to the homeserver")
		return ""
	}
	return local
}

// walkMedia calls rewrite for every content URI of c (and of its m.new_content) and sets what it returns, and check
// for every file size c gives.
func walkMedia(c Content, rewrite func(path []string, uri string) (string, error), check func(size float64) error) error {
	for _, content := range []Content{c, asContent(c["m.new_content"])} {
		if content == nil {
			continue
		}
		for _, path := range mediaFields {
			uri, ok := walkPath(content, path...).(string)
			if !ok || !strings.HasPrefix(uri, "mxc://") {
				continue
			}
			out, err := rewrite(path, uri)
			if err != nil {
				return err
			}
			setPath(content, out, path...)
		}
		if check == nil {
			continue
		}
		for _, path := range sizeFields {
			if size, ok := walkPath(content, path...).(float64); ok {
				if err := check(size); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func asContent(v any) Content {
	m, _ := v.(map[string]any)
	return m
}

func walkPath(c Content, path ...string) any {
	var v any = c
	for _, key := range path {
		m := asContent(v)
		if m == nil {
			return nil
		}
		v = m[key]
	}
	return v
}

// setPath sets a value walkPath found, so every map on the way exists.
func setPath(c Content, value string, path ...string) {
	m := c
	for _, key := range path[:len(path)-1] {
		m = asContent(m[key])
	}
	m[path[len(path)-1]] = value
}

// byteSize says a size as people read it.
func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
