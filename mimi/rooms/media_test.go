package rooms

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/remote"
)

// repo is a homeserver's media repository in memory: what a side downloads and uploads, and who uploaded what.
type repo struct {
	server   string
	maxBytes int64
	mu       sync.Mutex
	files    map[string][]byte
	types    map[string]string
	uploads  []remote.UserID
}

func newRepo(server string, maxBytes int64) *repo {
	return &repo{server: server, maxBytes: maxBytes, files: map[string][]byte{}, types: map[string]string{}}
}

func (r *repo) Download(_ context.Context, uri string) ([]byte, string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	data, ok := r.files[uri]
	if !ok {
		return nil, "", fmt.Errorf("%w: %s is not on the homeserver", ErrMediaRefused, uri)
	}
	return bytes.Clone(data), r.types[uri], nil
}

func (r *repo) Upload(_ context.Context, uploader remote.UserID, data []byte, mimetype, _ string) (string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	uri := fmt.Sprintf("mxc://%s/up%d", r.server, len(r.uploads))
	r.files[uri], r.types[uri] = bytes.Clone(data), mimetype
	r.uploads = append(r.uploads, uploader)
	return uri, nil
}

func (r *repo) MaxBytes() int64 { return r.maxBytes }

func (r *repo) uploadCount() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.uploads)
}

// mediaPair is a room hubbed by A with alice, and bob of B in it, each side with a media repository.
func mediaPair(t *testing.T, maxB int64, postgres bool) (a, b *side, repoA, repoB *repo, room remote.RoomID, alice, bob remote.UserID) {
	t.Helper()
	repoA, repoB = newRepo("hs-a", 1<<20), newRepo("hs-b", maxB)
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(t), postgres: postgres, media: map[string]Media{"mimi-a.test": repoA, "mimi-b.test": repoB}}
	a, b = n.start(t, "mimi-a.test"), n.start(t, "mimi-b.test")
	alice, bob = "@alice=hs-a:mimi-a.test", "@bob=hs-b:mimi-b.test"
	room, err := a.r.NewRoom(a.ctx, alice, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err = a.r.InviteToRoom(a.ctx, &remote.MembershipRequest{Room: room, Sender: alice, Target: bob}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bob's invite on B", func() bool {
		b.l.mu.Lock()
		defer b.l.mu.Unlock()
		return len(b.l.invites) == 1
	})
	return a, b, repoA, repoB, room, alice, bob
}

// TestAttachmentsCrossBothWays: an image from A's homeserver is sealed, served by A and fetched by B over mutual
// TLS, and uploaded to B's homeserver as the sender with the same bytes; a file goes back the other way; a message
// offered again is not fetched again.
func TestAttachmentsCrossBothWays(t *testing.T) {
	testAttachments(t, false)
}

// TestAttachmentsCrossBothWaysOnPostgres is the same with both sides' tables on PostgreSQL.
func TestAttachmentsCrossBothWaysOnPostgres(t *testing.T) {
	testAttachments(t, true)
}

func testAttachments(t *testing.T, postgres bool) {
	a, b, repoA, repoB, room, alice, bob := mediaPair(t, 1<<20, postgres)
	ctx := a.ctx
	png := append([]byte("\x89PNG\r\n\x1a\n"), bytes.Repeat([]byte("pixels"), 500)...)
	repoA.files["mxc://hs-a/cat"], repoA.types["mxc://hs-a/cat"] = png, "image/png"

	evID, err := a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message", Key: "img",
		Content: map[string]any{"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs-a/cat",
			"info": map[string]any{"mimetype": "image/png", "size": len(png)}}})
	if err != nil {
		t.Fatal(err)
	}
	var got *remote.Event
	waitFor(t, "the image on B", func() bool {
		got = b.l.find(func(ev *remote.Event) bool { return ev.EventID == string(evID) })
		return got != nil
	})
	c := contentOf(got)
	info, _ := c["info"].(map[string]any)
	uri, _ := c["url"].(string)
	if c["msgtype"] != "m.image" || c["body"] != "cat.png" || info["mimetype"] != "image/png" || info["size"] != float64(len(png)) ||
		!strings.HasPrefix(uri, "mxc://hs-b/") {
		t.Fatalf("image on B: %s", got.Content)
	}
	if data, _, err := repoB.Download(ctx, uri); err != nil || !bytes.Equal(data, png) {
		t.Fatalf("B's copy differs from what A sent (%d bytes, err %v)", len(data), err)
	}
	repoB.mu.Lock()
	uploader := repoB.uploads[0]
	repoB.mu.Unlock()
	if uploader != alice {
		t.Fatalf("B's copy uploaded as %s, want the sender %s", uploader, alice)
	}

	// What the hub served is sealed: the bytes at the URL are not the file.
	msg, err := decodeSent(ctx, a, room, "img")
	if err != nil {
		t.Fatal(err)
	}
	part := firstExternal(t, msg)
	sealed, err := a.r.externalContent(ctx, part.URL[strings.LastIndex(part.URL, "/")+1:])
	if err != nil || bytes.Contains(sealed, []byte("pixels")) || part.EncAlg != content.AEADAES128GCM || len(part.ContentHash) != 32 {
		t.Fatalf("stored object not sealed (err %v, alg %s, hash %x)", err, part.EncAlg, part.ContentHash)
	}
	// The same part again (a redelivery) is the copy made before.
	up, err := b.r.unsealMedia(ctx, alice, part)
	if err != nil || string(up.URL) != uri || repoB.uploadCount() != 1 {
		t.Fatalf("second unseal: %v %s, %d uploads", err, up.URL, repoB.uploadCount())
	}

	pdf := []byte("%PDF-1.4 a report")
	repoB.files["mxc://hs-b/report"], repoB.types["mxc://hs-b/report"] = pdf, "application/pdf"
	back, err := b.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: bob, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.file", "body": "report.pdf", "url": "mxc://hs-b/report"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file on A", func() bool {
		got = a.l.find(func(ev *remote.Event) bool { return ev.EventID == string(back) })
		return got != nil
	})
	c = contentOf(got)
	uri, _ = c["url"].(string)
	if c["msgtype"] != "m.file" || c["body"] != "report.pdf" {
		t.Fatalf("file on A: %s", got.Content)
	}
	if data, mt, err := repoA.Download(ctx, uri); err != nil || !bytes.Equal(data, pdf) || mt != "application/pdf" {
		t.Fatalf("A's copy: %q %s %v", data, mt, err)
	}
}

// decodeSent is the MIMI content a keyed send stored.
func decodeSent(ctx context.Context, s *side, room remote.RoomID, key string) (*content.Message, error) {
	uri, err := RoomURI(room)
	if err != nil {
		return nil, err
	}
	var mid, enc []byte
	var accepted bool
	if err = s.r.db.QueryRow(ctx, getSendQuery, uri, key).Scan(&mid, &enc, &accepted); err != nil {
		return nil, err
	}
	return content.Decode(enc)
}

func firstExternal(t *testing.T, m *content.Message) *content.ExternalPart {
	t.Helper()
	if ext, ok := m.Body.Part.(*content.ExternalPart); ok {
		return ext
	}
	t.Fatalf("body is %T, not an external part", m.Body.Part)
	return nil
}

// TestAttachmentFetchFailures: what a provider serves and a receiver accepts, each refusal with its own error: a
// client without a certificate or with one of another CA, an unknown ID, a hash that does not match, a file over the
// limit (stated or not), a URL that is not https.
func TestAttachmentFetchFailures(t *testing.T) {
	a, b, repoA, _, room, alice, _ := mediaPair(t, 1<<20, false)
	ctx := a.ctx
	file := bytes.Repeat([]byte("x"), 4000)
	repoA.files["mxc://hs-a/f"] = file
	if _, err := a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message", Key: "f",
		Content: map[string]any{"msgtype": "m.file", "body": "f.bin", "url": "mxc://hs-a/f"}}); err != nil {
		t.Fatal(err)
	}
	msg, err := decodeSent(ctx, a, room, "f")
	if err != nil {
		t.Fatal(err)
	}
	part := firstExternal(t, msg)
	if pt, err := b.r.FetchExternal(ctx, part, 1<<20); err != nil || !bytes.Equal(pt, file) {
		t.Fatalf("good fetch: %v", err)
	}

	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		_, port, _ := net.SplitHostPort(addr)
		var d net.Dialer
		return d.DialContext(ctx, network, "127.0.0.1:"+port)
	}
	own := b.r.p.PeerClient().Transport.(*http.Transport).TLSClientConfig
	other := testca.NewT(t)
	clientWith := func(certs []tls.Certificate) *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: dial,
			TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: own.RootCAs, Certificates: certs}}}
	}
	// The same client with B's certificate fetches it: what fails below is the certificate alone.
	if _, err := part.Fetch(ctx, clientWith(own.Certificates), 1<<20, time.Now()); err != nil {
		t.Fatalf("fetch with B's certificate: %v", err)
	}
	for name, certs := range map[string][]tls.Certificate{"no client certificate": nil,
		"certificate of another CA": {other.IssueT(t, "mimi-b.test")}} {
		if _, err := part.Fetch(ctx, clientWith(certs), 1<<20, time.Now()); !errors.Is(err, content.ErrFetch) {
			t.Errorf("%s: fetch = %v, want ErrFetch", name, err)
		}
	}

	unknown := *part
	unknown.URL = a.r.Provider().ContentURL("00112233445566778899aabbccddeeff")
	if _, err := b.r.FetchExternal(ctx, &unknown, 1<<20); !errors.Is(err, content.ErrFetch) || !strings.Contains(err.Error(), "404") {
		t.Errorf("unknown ID: %v, want a 404", err)
	}
	badHash := *part
	badHash.ContentHash = bytes.Repeat([]byte{1}, 32)
	if _, err := b.r.FetchExternal(ctx, &badHash, 1<<20); !errors.Is(err, content.ErrHashMismatch) {
		t.Errorf("hash mismatch: %v", err)
	}
	if _, err := b.r.FetchExternal(ctx, part, 1000); !errors.Is(err, content.ErrExternalTooLarge) {
		t.Errorf("oversize stated: %v", err)
	}
	unstated := *part
	unstated.Size = 0
	if _, err := b.r.FetchExternal(ctx, &unstated, 1000); !errors.Is(err, content.ErrExternalTooLarge) {
		t.Errorf("oversize unstated: %v", err)
	}
	plain := *part
	plain.URL = strings.Replace(part.URL, "https://", "http://", 1)
	if _, err := b.r.FetchExternal(ctx, &plain, 1<<20); !errors.Is(err, content.ErrUnsupportedURL) {
		t.Errorf("http URL: %v", err)
	}

	// A Matrix file the homeserver does not have is refused to the sender, and nothing is sent.
	_, err = a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.image", "body": "gone.png", "url": "mxc://hs-a/gone"}})
	if !errors.Is(err, remote.ErrUnsupported) || !errors.Is(err, ErrMediaRefused) {
		t.Errorf("missing file: %v, want ErrUnsupported and ErrMediaRefused", err)
	}
}

// TestAttachmentOverLimitBecomesANotice: a receiver whose limit the file is over posts a notice saying so instead of
// the file, and uploads nothing.
func TestAttachmentOverLimitBecomesANotice(t *testing.T) {
	a, b, repoA, repoB, room, alice, _ := mediaPair(t, 1000, false)
	repoA.files["mxc://hs-a/big"] = bytes.Repeat([]byte("b"), 5000)
	evID, err := a.r.SendRoomEvent(a.ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.file", "body": "big.bin", "url": "mxc://hs-a/big"}})
	if err != nil {
		t.Fatal(err)
	}
	var got *remote.Event
	waitFor(t, "the notice on B", func() bool {
		got = b.l.find(func(ev *remote.Event) bool { return ev.EventID == string(evID) })
		return got != nil
	})
	c := contentOf(got)
	if body, _ := c["body"].(string); c["msgtype"] != "m.notice" || !strings.Contains(body, "larger than allowed") ||
		got.Sender != string(alice) {
		t.Fatalf("on B: %s from %s", got.Content, got.Sender)
	}
	if repoB.uploadCount() != 0 {
		t.Fatalf("%d uploads for a refused file", repoB.uploadCount())
	}

	// A file of exactly the limit crosses: sealing's tag does not count against it.
	repoA.files["mxc://hs-a/edge"] = bytes.Repeat([]byte("e"), 1000)
	evID, err = a.r.SendRoomEvent(a.ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.file", "body": "edge.bin", "url": "mxc://hs-a/edge"}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the file at the limit on B", func() bool {
		got = b.l.find(func(ev *remote.Event) bool { return ev.EventID == string(evID) })
		return got != nil
	})
	if c := contentOf(got); c["msgtype"] != "m.file" || repoB.uploadCount() != 1 {
		t.Fatalf("file at the limit on B: %s, %d uploads", got.Content, repoB.uploadCount())
	}
}
