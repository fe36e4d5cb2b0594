package content

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

func TestSealOpen(t *testing.T) {
	plain := []byte("two hours of key signing video, abridged")
	for _, alg := range []AEADAlgorithm{AEADAES128GCM, AEADAES256GCM, AEADChaCha20Poly1305} {
		for _, h := range []HashAlgorithm{HashSHA256, HashSHA384, HashSHA512, HashSHA3256, HashSHA3384, HashSHA3512} {
			s, err := SealExternal(rand.Reader, alg, h, plain, []byte("aad"))
			if err != nil {
				t.Fatalf("%s/%d: %v", alg, h, err)
			}
			if len(s.Part.Key) != alg.KeySize() || len(s.Part.Nonce) != 12 || s.Part.Size != uint64(len(s.Ciphertext)) {
				t.Errorf("%s: key %d nonce %d size %d", alg, len(s.Part.Key), len(s.Part.Nonce), s.Part.Size)
			}
			if bytes.Contains(s.Ciphertext, plain[:16]) {
				t.Errorf("%s: ciphertext contains the plaintext", alg)
			}
			got, err := s.Part.Open(s.Ciphertext)
			if err != nil || !bytes.Equal(got, plain) {
				t.Errorf("%s/%d: open: %q, %v", alg, h, got, err)
			}
		}
	}
}

// TestAES128GCMKnownAnswer pins the AEAD framing (ciphertext || 16-byte tag, RFC 5116) with
// test case 3 of the GCM specification (McGrew and Viega; 128-bit key, no AAD).
func TestAES128GCMKnownAnswer(t *testing.T) {
	key := mustHex("feffe9928665731c6d6a8f9467308308")
	nonce := mustHex("cafebabefacedbaddecaf888")
	plain := mustHex("d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a721c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255")
	ct := mustHex("42831ec2217774244b7221b784d0d49ce3aa212f2c02a4e035c17e2329aca12e21d514b25466931c7d8f6a5aac84aa051ba30b396a0aac973d58e091473f5985" +
		"4d5c2af327cd64a62cf35abd2ba6fab4")
	sum, _ := HashSHA256.Sum(ct)
	part := ExternalPart{EncAlg: AEADAES128GCM, Key: key, Nonce: nonce, AAD: []byte{}, HashAlg: HashSHA256, ContentHash: sum, Size: uint64(len(ct))}
	got, err := part.Open(ct)
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("open: %x, %v", got, err)
	}
}

func TestOpenRejects(t *testing.T) {
	s, err := SealExternal(nil, AEADAES128GCM, HashSHA256, []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Clone(s.Ciphertext)
	tampered[0] ^= 1

	noHash := s.Part
	noHash.HashAlg, noHash.ContentHash = HashNone, nil
	wrongKey := s.Part
	wrongKey.Key = wrongKey.Key[:15]
	wrongNonce := s.Part
	wrongNonce.Nonce = wrongNonce.Nonce[:11]
	unknownAEAD := s.Part
	unknownAEAD.EncAlg = 3
	unknownHash := s.Part
	unknownHash.HashAlg = 2
	hashNoAlg := s.Part
	hashNoAlg.HashAlg = HashNone
	plainWithKey := noHash
	plainWithKey.EncAlg = AEADNone
	otherAAD := s.Part
	otherAAD.AAD = []byte("x")

	cases := []struct {
		name string
		part ExternalPart
		data []byte
		want error
	}{
		{"tampered, hash checked first", s.Part, tampered, ErrHashMismatch},
		{"tampered, no hash", noHash, tampered, ErrDecrypt},
		{"other aad", otherAAD, s.Ciphertext, ErrDecrypt},
		{"wrong size", s.Part, s.Ciphertext[:len(s.Ciphertext)-1], ErrSizeMismatch},
		{"short key", wrongKey, s.Ciphertext, ErrBadKey},
		{"short nonce", wrongNonce, s.Ciphertext, ErrBadKey},
		{"unsupported AEAD", unknownAEAD, s.Ciphertext, ErrUnsupportedAEAD},
		{"unsupported hash", unknownHash, s.Ciphertext, ErrUnsupportedHash},
		{"hash without algorithm", hashNoAlg, s.Ciphertext, ErrUnsupportedHash},
		{"key without algorithm", plainWithKey, s.Ciphertext, ErrBadKey},
	}
	for _, c := range cases {
		if _, err := c.part.Open(c.data); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	if _, err := SealExternal(nil, AEADNone, HashSHA256, []byte("x"), nil); !errors.Is(err, ErrUnsupportedAEAD) {
		t.Errorf("seal without algorithm: %v", err)
	}
	if _, err := SealExternal(nil, AEADAES128GCM, HashAlgorithm(99), []byte("x"), nil); !errors.Is(err, ErrUnsupportedHash) {
		t.Errorf("seal with unknown hash: %v", err)
	}
	// The attachment example's part has the draft's AES-128-GCM shapes; content that is not
	// the 708234961-byte video fails the size check.
	m, err := Decode(mustRead(t, "testdata/head-961ea5a/attachment.cbor"))
	if err != nil {
		t.Fatal(err)
	}
	e := m.Body.Part.(*ExternalPart)
	if e.EncAlg != AEADAES128GCM || e.HashAlg != HashSHA256 || len(e.Key) != 16 || len(e.Nonce) != 12 {
		t.Errorf("attachment part: %+v", e)
	}
	if _, err := e.Open([]byte("not the video")); !errors.Is(err, ErrSizeMismatch) {
		t.Errorf("attachment open: %v", err)
	}
	// Unencrypted, unhashed content (the conferencing example's shape) opens as itself.
	plain := ExternalPart{URL: "https://example.com/join/12345"}
	if got, err := plain.Open([]byte("x")); err != nil || string(got) != "x" {
		t.Errorf("plain open: %q, %v", got, err)
	}
}

func TestFetch(t *testing.T) {
	s, err := SealExternal(nil, AEADAES128GCM, HashSHA256, bytes.Repeat([]byte("media "), 1000), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/media":
			w.Write(s.Ciphertext)
		case "/other":
			w.Write(bytes.Repeat([]byte{0}, len(s.Ciphertext)))
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	defer srv.Close()

	ctx := context.Background()
	now := time.Unix(1_700_000_000, 0)
	part := s.Part
	part.URL = srv.URL + "/media"
	got, err := part.Fetch(ctx, srv.Client(), 1<<20, now)
	if err != nil || !bytes.Equal(got, bytes.Repeat([]byte("media "), 1000)) {
		t.Fatalf("fetch: %d bytes, %v", len(got), err)
	}

	with := func(f func(*ExternalPart)) ExternalPart { p := part; f(&p); return p }
	cases := []struct {
		name  string
		part  ExternalPart
		limit int64
		want  error
	}{
		{"not found", with(func(p *ExternalPart) { p.URL = srv.URL + "/gone" }), 1 << 20, ErrFetch},
		{"other content", with(func(p *ExternalPart) { p.URL = srv.URL + "/other" }), 1 << 20, ErrHashMismatch},
		{"stated size above limit", part, 100, ErrExternalTooLarge},
		{"body above limit", with(func(p *ExternalPart) { p.Size = 0 }), 100, ErrExternalTooLarge},
		{"expired", with(func(p *ExternalPart) { p.Expires = uint32(now.Unix()) }), 1 << 20, ErrExternalExpired},
		{"ftp URL", with(func(p *ExternalPart) { p.URL = "ftp://127.0.0.1/media" }), 1 << 20, ErrUnsupportedURL},
		{"mimi URL", with(func(p *ExternalPart) { p.URL = "mimi://example.com/u/alice" }), 1 << 20, ErrUnsupportedURL},
	}
	for _, c := range cases {
		if _, err := c.part.Fetch(ctx, srv.Client(), c.limit, now); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	expired := with(func(p *ExternalPart) { p.Expires = 1 })
	if !expired.Expired(now) || part.Expired(now) {
		t.Errorf("Expired wrong")
	}
}
