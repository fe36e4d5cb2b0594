package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadOrGenerateSigningKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "lm.signing.key")
	first, err := LoadOrGenerateSigningKey(path)
	if err != nil {
		t.Fatalf("generate: %v", err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatalf("key file not written: %v", err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", info.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(data), "ed25519 ") || len(strings.Fields(string(data))) != 3 {
		t.Errorf("key file is not in Synapse's format: %q", data)
	}
	second, err := LoadOrGenerateSigningKey(path)
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if second.ID != first.ID || !bytes.Equal(second.Priv, first.Priv) {
		t.Error("reloaded key differs from the generated one")
	}
	// A Synapse key file (seed from the Matrix spec's signing examples) loads as is.
	synapse := filepath.Join(t.TempDir(), "synapse.signing.key")
	_ = os.WriteFile(synapse, []byte("ed25519 1 YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1\n"), 0o600)
	key, err := LoadOrGenerateSigningKey(synapse)
	if err != nil {
		t.Fatalf("load Synapse key: %v", err)
	}
	if key.ID != "ed25519:1" || key.Pub != "XGX0JRS2Af3be3knz2fBiRbApjm2Dh61gXDJA8kcJNI" {
		t.Errorf("Synapse key loaded as %s %s", key.ID, key.Pub)
	}
	bad := filepath.Join(t.TempDir(), "bad.signing.key")
	_ = os.WriteFile(bad, []byte("rsa 1 abc\n"), 0o600)
	if _, err := LoadOrGenerateSigningKey(bad); err == nil {
		t.Error("a malformed key file was accepted")
	}
}

func TestKeyServer(t *testing.T) {
	key, _ := LoadOrGenerateSigningKey(filepath.Join(t.TempDir(), "k"))
	now := time.UnixMilli(1795292900000)
	ks := &KeyServer{ServerName: "lm.example.org", Key: key, Now: func() time.Time { return now }}
	rec := httptest.NewRecorder()
	ks.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/_matrix/key/v2/server", nil))
	if rec.Code != http.StatusOK || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", rec.Code, rec.Header().Get("Content-Type"))
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(rec.Body.Bytes(), &raw); err != nil {
		t.Fatalf("answer is not JSON: %v", err)
	}
	if string(raw["m.linearized"]) != "true" {
		t.Errorf("m.linearized = %s", raw["m.linearized"])
	}
	kr := &KeyRing{Now: func() time.Time { return now }}
	if err := kr.AddServerKeys("lm.example.org", rec.Body.Bytes()); err != nil {
		t.Fatalf("our own key answer does not verify: %v", err)
	}
	pub, err := kr.VerifyKey(context.Background(), "lm.example.org", string(key.ID))
	if err != nil || !bytes.Equal(pub, key.Priv.Public().(ed25519.PublicKey)) {
		t.Errorf("VerifyKey = %x, %v", pub, err)
	}
	parsed, _ := ParseServerKeys(rec.Body.Bytes(), "lm.example.org")
	if got := time.UnixMilli(parsed.ValidUntilTS).Sub(now); got != KeyServerValidity {
		t.Errorf("valid_until_ts is %s ahead, want %s", got, KeyServerValidity)
	}
	// Two hours later the answer is re-signed with a later valid_until_ts.
	now = now.Add(2 * time.Hour)
	body, _ := ks.Response()
	later, _ := ParseServerKeys(body, "lm.example.org")
	if later.ValidUntilTS != now.Add(KeyServerValidity).UnixMilli() {
		t.Errorf("valid_until_ts not moved forward: %d", later.ValidUntilTS)
	}
}
