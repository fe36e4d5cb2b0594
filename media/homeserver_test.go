package media

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// legacyHomeserver serves files only under /_matrix/media/v3, as a homeserver from before Matrix v1.11 does, and
// answers the authenticated media API 404 M_UNRECOGNIZED; it records the paths asked and the token they came with.
type legacyHomeserver struct {
	files map[string]string
	lock  sync.Mutex
	asked []string
}

func (h *legacyHomeserver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.lock.Lock()
	h.asked = append(h.asked, r.URL.Path+" "+r.Header.Get("Authorization"))
	h.lock.Unlock()
	w.Header().Set("Content-Type", "application/json")
	prefix := "/_matrix/media/v3/download/hs.example/"
	if !strings.HasPrefix(r.URL.Path, prefix) {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errcode":"M_UNRECOGNIZED","error":"Unrecognized request"}`)
		return
	}
	data, ok := h.files[strings.TrimPrefix(r.URL.Path, prefix)]
	if !ok {
		w.WriteHeader(http.StatusNotFound)
		_, _ = io.WriteString(w, `{"errcode":"M_NOT_FOUND","error":"Not found"}`)
		return
	}
	w.Header().Set("Content-Type", "text/plain")
	_, _ = io.WriteString(w, data)
}

// TestHomeserverSourceFallsBackToLegacyMedia: on a homeserver without the authenticated media API, files are served
// from the legacy one, with the application service's token; an unknown file is 404 M_NOT_FOUND and one over the
// limit 502 M_TOO_LARGE, not a file.
func TestHomeserverSourceFallsBackToLegacyMedia(t *testing.T) {
	hs := &legacyHomeserver{files: map[string]string{"small": "a small file", "large": strings.Repeat("x", 100)}}
	srv := httptest.NewServer(hs)
	t.Cleanup(srv.Close)
	cli, err := mautrix.NewClient(srv.URL, "@bot:hs.example", "as-token")
	if err != nil {
		t.Fatal(err)
	}
	src := &homeserverSource{cli: cli, domain: "hs.example", maxBytes: 50}
	ctx := context.Background()
	file, err := src.Download(ctx, "lm.example", "small")
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(file.Body)
	file.Body.Close()
	if err != nil || string(data) != "a small file" || file.ContentType != "text/plain" {
		t.Errorf("file %q of %q, %v", data, file.ContentType, err)
	}
	want := []string{"/_matrix/client/v1/media/download/hs.example/small Bearer as-token",
		"/_matrix/media/v3/download/hs.example/small Bearer as-token"}
	if strings.Join(hs.asked, "\n") != strings.Join(want, "\n") {
		t.Errorf("asked %q, want %q", hs.asked, want)
	}
	var fedErr *federation.Error
	if _, err = src.Download(ctx, "lm.example", "missing"); !errors.As(err, &fedErr) || fedErr.Status != 404 || fedErr.ErrCode != federation.ErrCodeNotFound {
		t.Errorf("unknown file: %v, want 404 M_NOT_FOUND", err)
	}
	if _, err = src.Download(ctx, "lm.example", "large"); !errors.As(err, &fedErr) || fedErr.Status != 502 || fedErr.ErrCode != federation.ErrCodeTooLarge {
		t.Errorf("file over the limit: %v, want 502 M_TOO_LARGE", err)
	}
}
