package media

import (
	"context"
	"errors"
	"testing"

	"github.com/lmbridge/lmbridge/bridge"
)

// TestDownloadAndUploadRefuseBeforeAsking: a URI of another server (or not a content URI) is no homeserver file to
// read, and a file over the limit is not uploaded; both are refusals for good, found before the homeserver is asked
// (the Mapper has no appservice here, so asking it would fail the test).
func TestDownloadAndUploadRefuseBeforeAsking(t *testing.T) {
	m := &Mapper{hsDomain: "hs.example", lmServer: "lm.hs.example", maxBytes: 10}
	ctx := context.Background()
	for _, uri := range []string{"mxc://other.example/abc", "https://hs.example/abc", "mxc://hs.example/", ""} {
		if _, _, err := m.Download(ctx, uri); !errors.Is(err, bridge.ErrMediaRefused) {
			t.Errorf("Download(%q) = %v, want ErrMediaRefused", uri, err)
		}
	}
	if _, err := m.Upload(ctx, "@lm_bob=mimi.example:hs.example", make([]byte, 11), "image/png", "x.png"); !errors.Is(err, bridge.ErrMediaRefused) {
		t.Errorf("Upload over the limit = %v, want ErrMediaRefused", err)
	}
}
