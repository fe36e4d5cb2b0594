package federation

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/textproto"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// Matrix's federation media API (spec v1.11, MSC3916): a server fetches another server's media by media ID, signed
// with X-Matrix, and gets a multipart/mixed answer of two parts, a JSON metadata object and the file (or a Location
// to fetch it from).
const (
	mediaDownloadPath  = "/_matrix/federation/v1/media/download"
	mediaThumbnailPath = "/_matrix/federation/v1/media/thumbnail"
	// maxRedirectedMedia is how many Location hops DownloadMedia follows: the spec has the second part point at the
	// file, which is one.
	maxRedirectedMedia = 1
	// mediaWriteTimeout replaces the listener's write timeout for a media answer, which is a file of up to
	// media.max_file_bytes rather than a JSON object: 50 MiB at a slow 200 KB/s. The fetcher is authenticated by then,
	// and the requests in flight of one origin are bounded, so a slow reader holds no more than its share.
	mediaWriteTimeout = 5 * time.Minute
)

// ErrMediaTooLarge means a file is larger than the bound it was fetched with; nothing of it is returned.
var ErrMediaTooLarge = errors.New("media is larger than the limit")

// validMediaID is the media ID grammar of the spec's content URIs.
var validMediaID = regexp.MustCompile(`^[A-Za-z0-9_-]+$`)

// MediaFile is one file of a media repository: an answer of a MediaSource, or what DownloadMedia fetched.
type MediaFile struct {
	ContentType string
	// Disposition is the Content-Disposition header of the file's part (a file name), "" for none.
	Disposition string
	// Size is the length of Body when known, -1 when not.
	Size int64
	// Body is the file; the server closes it. DownloadMedia's answers have Data instead.
	Body io.ReadCloser
	// Data is the whole file, in DownloadMedia's answers.
	Data []byte
}

// Thumbnail is what a thumbnail request asks for (the spec's query parameters).
type Thumbnail struct {
	Width, Height int
	// Method is "crop" or "scale" ("" lets the source choose).
	Method   string
	Animated bool
}

// MediaSource is the media repository the media endpoints serve: for lmbridge, its homeserver's. An *Error answer
// goes out as it is (M_NOT_FOUND, M_TOO_LARGE); any other error is a 500.
type MediaSource interface {
	Download(ctx context.Context, origin, mediaID string) (*MediaFile, error)
	Thumbnail(ctx context.Context, origin, mediaID string, thumb Thumbnail) (*MediaFile, error)
}

// ServeMedia adds the federation media download and thumbnail endpoints, answered from src. Call it before the server
// takes requests.
func (s *Server) ServeMedia(src MediaSource) {
	s.handleMedia(mediaDownloadPath+"/{mediaId}", func(ctx context.Context, in *inbound, mediaID string) (*MediaFile, error) {
		return src.Download(ctx, in.origin, mediaID)
	})
	s.handleMedia(mediaThumbnailPath+"/{mediaId}", func(ctx context.Context, in *inbound, mediaID string) (*MediaFile, error) {
		thumb, err := parseThumbnail(in.r.URL.Query())
		if err != nil {
			return nil, err
		}
		return src.Thumbnail(ctx, in.origin, mediaID, thumb)
	})
}

func parseThumbnail(q url.Values) (Thumbnail, error) {
	var t Thumbnail
	for _, p := range []struct {
		name string
		into *int
	}{{"width", &t.Width}, {"height", &t.Height}} {
		v := q.Get(p.name)
		if v == "" {
			return t, Errorf(http.StatusBadRequest, ErrCodeMissingParam, "Missing %s query parameter", p.name)
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 10000 {
			return t, Errorf(http.StatusBadRequest, ErrCodeInvalidParam, "%s must be an integer from 1 to 10000", p.name)
		}
		*p.into = n
	}
	switch t.Method = q.Get("method"); t.Method {
	case "", "crop", "scale":
	default:
		return t, Errorf(http.StatusBadRequest, ErrCodeInvalidParam, "method must be crop or scale")
	}
	switch a := q.Get("animated"); a {
	case "", "false":
	case "true":
		t.Animated = true
	default:
		return t, Errorf(http.StatusBadRequest, ErrCodeInvalidParam, "animated must be true or false")
	}
	return t, nil
}

func (s *Server) handleMedia(pattern string, fn func(ctx context.Context, in *inbound, mediaID string) (*MediaFile, error)) {
	s.mux.HandleFunc(http.MethodGet+" "+pattern, func(w http.ResponseWriter, r *http.Request) {
		in, err := s.authenticate(w, r)
		if err != nil {
			httpguard.CloseAfterAnswer(w, r)
			writeError(w, r, err)
			return
		}
		ctx := zerolog.Ctx(r.Context()).With().Str("origin", in.origin).Logger().WithContext(r.Context())
		mediaID := r.PathValue("mediaId")
		if !validMediaID.MatchString(mediaID) {
			writeError(w, r, Errorf(http.StatusNotFound, ErrCodeNotFound, "No media with that ID here"))
			return
		}
		file, err := fn(ctx, in, mediaID)
		if err == nil && file == nil {
			err = fmt.Errorf("media source answered neither a file nor an error for %s", mediaID)
		}
		if err != nil {
			writeError(w, r, err)
			return
		}
		defer file.Body.Close()
		if err = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(mediaWriteTimeout)); err != nil {
			zerolog.Ctx(ctx).Debug().Err(err).Msg("Failed to extend the write deadline of a media answer")
		}
		writeMultipart(ctx, w, file)
	})
}

// writeMultipart streams the two-part answer: the metadata object (empty: the spec defines no field yet) and the file.
func writeMultipart(ctx context.Context, w http.ResponseWriter, file *MediaFile) {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, err = meta.Write([]byte("{}"))
	}
	header := textproto.MIMEHeader{"Content-Type": {file.ContentType}}
	if file.ContentType == "" {
		header.Set("Content-Type", "application/octet-stream")
	}
	if file.Disposition != "" {
		header.Set("Content-Disposition", file.Disposition)
	}
	var part io.Writer
	if err == nil {
		part, err = mw.CreatePart(header)
	}
	if err == nil {
		_, err = io.Copy(part, file.Body)
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil {
		// The status is out: all that is left is to cut the answer short, which the fetcher sees as a broken part.
		zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to send media answer")
		panic(http.ErrAbortHandler)
	}
}

// DownloadMedia fetches a file of destination's media repository, refusing (ErrMediaTooLarge) one over maxBytes.
func (c *Client) DownloadMedia(ctx context.Context, destination, mediaID string, maxBytes int64) (*MediaFile, error) {
	return c.fetchMedia(ctx, destination, buildPath(mediaDownloadPath, mediaID), nil, maxBytes)
}

// ThumbnailMedia fetches a thumbnail of a file of destination's media repository.
func (c *Client) ThumbnailMedia(ctx context.Context, destination, mediaID string, thumb Thumbnail, maxBytes int64) (*MediaFile, error) {
	q := url.Values{"width": {strconv.Itoa(thumb.Width)}, "height": {strconv.Itoa(thumb.Height)}}
	if thumb.Method != "" {
		q.Set("method", thumb.Method)
	}
	if thumb.Animated {
		q.Set("animated", "true")
	}
	return c.fetchMedia(ctx, destination, buildPath(mediaThumbnailPath, mediaID), q, maxBytes)
}

func (c *Client) fetchMedia(ctx context.Context, destination, path string, query url.Values, maxBytes int64) (*MediaFile, error) {
	base, err := c.baseURL(ctx, destination)
	if err != nil {
		return nil, err
	}
	target := base + path
	if len(query) > 0 {
		target += "?" + query.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, fmt.Errorf("failed to prepare media request: %w", err)
	}
	auth, err := signRequest(c.Key, c.ServerName, destination, http.MethodGet, req.URL.RequestURI(), nil, false)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("User-Agent", userAgent)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("failed to fetch media %s from %s: %w", path, destination, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorAnswerBytes))
		return nil, parseErrorAnswer(resp.StatusCode, data)
	}
	mediaType, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mediaType != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("media answer of %s is %q, not multipart/mixed", destination, resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("failed to read the metadata part of the media answer of %s: %w", destination, err)
	}
	if _, err = io.Copy(io.Discard, io.LimitReader(meta, maxErrorAnswerBytes)); err != nil {
		return nil, fmt.Errorf("failed to read the metadata part of the media answer of %s: %w", destination, err)
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("failed to read the file part of the media answer of %s: %w", destination, err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		return c.followMediaLocation(ctx, destination, loc, maxBytes)
	}
	return readMediaPart(part.Header.Get("Content-Type"), part.Header.Get("Content-Disposition"), part, maxBytes, destination)
}

// followMediaLocation fetches the file a media answer pointed at, without X-Matrix (the spec has it a plain URL, on a
// CDN, say), through the same dialer and so the same address blocklist.
func (c *Client) followMediaLocation(ctx context.Context, destination, loc string, maxBytes int64) (*MediaFile, error) {
	u, err := url.Parse(loc)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("media answer of %s points at %q, not an HTTP URL", destination, loc)
	}
	for hops := 0; ; hops++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
		if err != nil {
			return nil, fmt.Errorf("failed to prepare media request: %w", err)
		}
		req.Header.Set("User-Agent", userAgent)
		resp, err := c.HTTP.Do(req)
		if err != nil {
			return nil, fmt.Errorf("failed to fetch media of %s at its location: %w", destination, err)
		}
		if next := resp.Header.Get("Location"); resp.StatusCode >= 300 && resp.StatusCode < 400 && next != "" && hops < maxRedirectedMedia {
			resp.Body.Close()
			if u, err = u.Parse(next); err != nil {
				return nil, fmt.Errorf("media location of %s redirects to %q: %w", destination, next, err)
			}
			continue
		}
		defer resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return nil, &Error{Status: resp.StatusCode, ErrCode: ErrCodeNotFound,
				Message: fmt.Sprintf("media location of %s answered HTTP %d", destination, resp.StatusCode)}
		}
		if resp.ContentLength > maxBytes {
			return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrMediaTooLarge, resp.ContentLength, maxBytes)
		}
		return readMediaPart(resp.Header.Get("Content-Type"), resp.Header.Get("Content-Disposition"), resp.Body, maxBytes, destination)
	}
}

func readMediaPart(contentType, disposition string, r io.Reader, maxBytes int64, destination string) (*MediaFile, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxBytes+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read media of %s: %w", destination, err)
	}
	if int64(len(data)) > maxBytes {
		return nil, fmt.Errorf("%w: over %d bytes", ErrMediaTooLarge, maxBytes)
	}
	return &MediaFile{ContentType: contentType, Disposition: disposition, Size: int64(len(data)), Data: data}, nil
}
