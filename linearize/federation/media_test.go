package federation

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix/federation"
)

// memoryMedia is a media repository in memory: files by media ID, and the thumbnail requests it was asked.
type memoryMedia struct {
	files  map[string]*MediaFile
	lock   sync.Mutex
	thumbs []string
}

func (m *memoryMedia) Download(_ context.Context, origin, mediaID string) (*MediaFile, error) {
	f, ok := m.files[mediaID]
	if !ok {
		return nil, Errorf(http.StatusNotFound, ErrCodeNotFound, "No media with that ID here")
	}
	return &MediaFile{ContentType: f.ContentType, Disposition: f.Disposition, Size: int64(len(f.Data)),
		Body: io.NopCloser(bytes.NewReader(f.Data))}, nil
}

func (m *memoryMedia) Thumbnail(ctx context.Context, origin, mediaID string, thumb Thumbnail) (*MediaFile, error) {
	m.lock.Lock()
	m.thumbs = append(m.thumbs, fmt.Sprintf("%s %s %dx%d %s %v", origin, mediaID, thumb.Width, thumb.Height, thumb.Method, thumb.Animated))
	m.lock.Unlock()
	return m.Download(ctx, origin, mediaID)
}

func wantFedError(t *testing.T, what string, err error, status int, errcode string) {
	t.Helper()
	var fedErr *Error
	if !errors.As(err, &fedErr) || fedErr.Status != status || fedErr.ErrCode != errcode || fedErr.Message == "" {
		t.Errorf("%s: got %v, want %d %s with a message", what, err, status, errcode)
	}
}

// TestMediaRoundTrip: a file served by one LM server's media endpoints comes out of another's DownloadMedia whole,
// with its type and name; thumbnails carry their parameters; bad requests get Matrix errors.
func TestMediaRoundTrip(t *testing.T) {
	a, b := newTestPeer(t), newTestPeer(t)
	ctx := context.Background()
	data := bytes.Repeat([]byte("0123456789abcdef"), 4096)
	src := &memoryMedia{files: map[string]*MediaFile{
		"pic_1-A": {ContentType: "image/png", Disposition: `inline; filename="cat.png"`, Data: data},
	}}
	b.server.ServeMedia(src)

	file, err := a.client.DownloadMedia(ctx, b.name, "pic_1-A", int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file.Data, data) || file.ContentType != "image/png" || file.Disposition != `inline; filename="cat.png"` {
		t.Errorf("downloaded %d bytes of %q (%q), want %d of image/png (cat.png)", len(file.Data), file.ContentType, file.Disposition, len(data))
	}
	if _, err = a.client.ThumbnailMedia(ctx, b.name, "pic_1-A", Thumbnail{Width: 32, Height: 24, Method: "crop", Animated: true}, int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if want := a.name + " pic_1-A 32x24 crop true"; len(src.thumbs) != 1 || src.thumbs[0] != want {
		t.Errorf("thumbnail requests %q, want %q", src.thumbs, want)
	}

	_, err = a.client.DownloadMedia(ctx, b.name, "pic_1-A", int64(len(data))-1)
	if !errors.Is(err, ErrMediaTooLarge) {
		t.Errorf("download over the bound: %v, want ErrMediaTooLarge", err)
	}
	_, err = a.client.DownloadMedia(ctx, b.name, "nothing", 1<<20)
	wantFedError(t, "unknown media", err, http.StatusNotFound, ErrCodeNotFound)
	_, err = a.client.DownloadMedia(ctx, b.name, "not a media id", 1<<20)
	wantFedError(t, "bad media ID", err, http.StatusNotFound, ErrCodeNotFound)
	for _, bad := range []Thumbnail{{Width: 0, Height: 1}, {Width: 1, Height: 10001}, {Width: 1, Height: 1, Method: "stretch"}} {
		_, err = a.client.ThumbnailMedia(ctx, b.name, "pic_1-A", bad, 1<<20)
		wantFedError(t, fmt.Sprintf("thumbnail %+v", bad), err, http.StatusBadRequest, ErrCodeInvalidParam)
	}
	for _, path := range []string{"/_matrix/federation/v1/media/thumbnail/pic_1-A?height=3", "/_matrix/federation/v1/media/download/pic_1-A"} {
		_, err = a.client.Do(ctx, &Request{Destination: b.name, Method: http.MethodGet, Path: path, Unauthenticated: true})
		wantFedError(t, "unsigned "+path, err, http.StatusUnauthorized, ErrCodeForbidden)
	}
	_, err = a.client.Do(ctx, &Request{Destination: b.name, Method: http.MethodGet, Path: "/_matrix/federation/v1/media/thumbnail/pic_1-A?width=3"})
	wantFedError(t, "thumbnail without height", err, http.StatusBadRequest, ErrCodeMissingParam)
}

// TestMediaFollowsLocation: an answer whose file part is a Location is fetched from there, within the same bound;
// an answer that is not multipart is an error, not a file.
func TestMediaFollowsLocation(t *testing.T) {
	data := []byte("the file on a CDN")
	cdn := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write(data)
	}))
	t.Cleanup(cdn.Close)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/plain") {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = w.Write(data)
			return
		}
		mw := multipart.NewWriter(w)
		w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
		meta, _ := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
		_, _ = meta.Write([]byte("{}"))
		_, _ = mw.CreatePart(textproto.MIMEHeader{"Location": {cdn.URL + "/f"}})
		_ = mw.Close()
	})}
	go func() { _ = origin.Serve(ln) }()
	t.Cleanup(func() { _ = origin.Close() })

	c := NewClient("a.example", federation.GenerateSigningKey(), ClientOptions{AllowHTTPPeers: true})
	file, err := c.DownloadMedia(context.Background(), ln.Addr().String(), "located", 1<<10)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file.Data, data) || file.ContentType != "text/plain" {
		t.Errorf("located file: %q of %q", file.Data, file.ContentType)
	}
	if _, err = c.DownloadMedia(context.Background(), ln.Addr().String(), "located", 4); !errors.Is(err, ErrMediaTooLarge) {
		t.Errorf("located file over the bound: %v, want ErrMediaTooLarge", err)
	}
	if _, err = c.DownloadMedia(context.Background(), ln.Addr().String(), "plain", 1<<10); err == nil || !strings.Contains(err.Error(), "multipart") {
		t.Errorf("a plain answer: %v, want an error saying it is not multipart", err)
	}
}
