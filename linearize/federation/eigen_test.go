package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const eigenDir = "../../../shared/interop/eigen"

func eigenPath(t testing.TB, name string) string {
	t.Helper()
	p := filepath.Join(eigenDir, name)
	if _, err := os.Stat(p); err != nil {
		// The fixtures live beside the checkout; fall back to their absolute home.
		p = filepath.Join("/work/shared/interop/eigen", name)
	}
	return p
}

func readEigen(t testing.TB, name string) []byte {
	t.Helper()
	data, err := os.ReadFile(eigenPath(t, name))
	if err != nil {
		t.Fatalf("failed to read eigen capture %s: %v", name, err)
	}
	return data
}

// eigenTime is a moment inside the captures (November 2026), when every captured key answer was valid.
var eigenTime = time.UnixMilli(1795292900000)

type eigenExchange struct {
	Dir            string            `json:"dir"`
	From           string            `json:"from"`
	Method         string            `json:"method"`
	URL            string            `json:"url"`
	Path           string            `json:"path"`
	RequestHeaders map[string]string `json:"request_headers"`
	XMatrixCheck   string            `json:"x_matrix_check"`
	RequestBody    json.RawMessage   `json:"request_body"`
	Status         int               `json:"status"`
	ResponseBody   json.RawMessage   `json:"response_body"`
}

func (e *eigenExchange) uri() string {
	if e.Path != "" {
		return e.Path
	}
	u := strings.TrimPrefix(strings.TrimPrefix(e.URL, "http://"), "https://")
	return u[strings.IndexByte(u, '/'):]
}

func (e *eigenExchange) header(name string) string {
	for k, v := range e.RequestHeaders {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return ""
}

func loadEigenExchanges(t testing.TB, name string) []eigenExchange {
	var capture struct {
		Exchanges []eigenExchange `json:"exchanges"`
	}
	if err := json.Unmarshal(readEigen(t, name), &capture); err != nil {
		t.Fatalf("failed to decode %s: %v", name, err)
	}
	return capture.Exchanges
}

// eigenKeyRing is a KeyRing that knows eigen A, eigen B and the independent peer from their captured key answers,
// and cannot fetch anything else.
func eigenKeyRing(t testing.TB) *KeyRing {
	t.Helper()
	kr := &KeyRing{Now: func() time.Time { return eigenTime }}
	httpA := readEigen(t, "01-key-v2-server-A.http.txt")
	_, bodyA, ok := bytes.Cut(httpA, []byte("\r\n\r\n"))
	if !ok {
		_, bodyA, _ = bytes.Cut(httpA, []byte("\n\n"))
	}
	if err := kr.AddServerKeys("127.0.0.1:3000", bytes.TrimSpace(bodyA)); err != nil {
		t.Fatalf("eigen A's key answer rejected: %v", err)
	}
	if err := kr.AddServerKeys("127.0.0.1:3001", readEigen(t, "01-key-v2-server-B.json")); err != nil {
		t.Fatalf("eigen B's key answer rejected: %v", err)
	}
	for _, ex := range loadEigenExchanges(t, "30-independent-peer-trace.json") {
		if ex.Path == "/_matrix/key/v2/server" && ex.Dir == "inbound" {
			if err := kr.AddServerKeys("127.0.0.1:3002", ex.ResponseBody); err != nil {
				t.Fatalf("independent peer's key answer rejected: %v", err)
			}
		}
	}
	return kr
}

func TestEigenKeyAnswers(t *testing.T) {
	kr := eigenKeyRing(t)
	for server, want := range map[string]string{
		"127.0.0.1:3000": "ijMZQuh2x9AjYh4KZUmB0r7OdrATRQ4wSlKVsBYG9xE",
		"127.0.0.1:3001": "NrewUHiGCu0x3TjVL+0lRptxOspARyO6OgyZslHSP3U",
	} {
		key, err := kr.VerifyKey(context.Background(), server, "ed25519:1")
		if err != nil {
			t.Fatalf("VerifyKey(%s): %v", server, err)
		}
		want, _ := decodeEd25519(want)
		if !bytes.Equal(key, want) {
			t.Errorf("key of %s = %x, want %x", server, key, want)
		}
	}
	if _, err := kr.VerifyKey(context.Background(), "127.0.0.1:3002", "ed25519:fake1"); err != nil {
		t.Errorf("independent peer's key: %v", err)
	}
	if _, err := kr.VerifyKey(context.Background(), "127.0.0.1:3000", "ed25519:2"); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("unknown key ID: got %v, want ErrUnknownKey", err)
	}

	// A tampered answer (m.linearized flipped: it is covered by the signature) and one for another name are refused.
	body := readEigen(t, "01-key-v2-server-B.json")
	tampered := bytes.Replace(body, []byte(`"m.linearized": true`), []byte(`"m.linearized": false`), 1)
	if bytes.Equal(tampered, body) {
		t.Fatal("fixture changed: m.linearized not found")
	}
	if err := kr.AddServerKeys("127.0.0.1:3001", tampered); !errors.Is(err, ErrKeyResponseUnsigned) {
		t.Errorf("tampered key answer: got %v, want ErrKeyResponseUnsigned", err)
	}
	if err := kr.AddServerKeys("127.0.0.1:3000", body); !errors.Is(err, ErrKeyResponseWrongName) {
		t.Errorf("key answer for another server: got %v, want ErrKeyResponseWrongName", err)
	}
	// After its valid_until_ts (1795299991456) the answer is no longer accepted.
	late := &KeyRing{Now: func() time.Time { return time.UnixMilli(1795299991456) }}
	if err := late.AddServerKeys("127.0.0.1:3001", body); !errors.Is(err, ErrKeyResponseInvalid) {
		t.Errorf("expired key answer: got %v, want ErrKeyResponseInvalid", err)
	}
}

func verifyEigenExchange(t *testing.T, kr *KeyRing, ex *eigenExchange, destination string, body []byte) error {
	var headers []string
	if h := ex.header("Authorization"); h != "" {
		headers = append(headers, h)
	}
	if ex.Method == http.MethodGet {
		body = nil
	}
	_, err := VerifyRequest(context.Background(), kr, destination, ex.Method, []string{ex.uri()}, headers, body)
	return err
}

func TestEigenXMatrixHeaders(t *testing.T) {
	kr := eigenKeyRing(t)
	verified := 0
	for _, file := range []string{"10-eigen-to-eigen-federation-trace.json", "30-independent-peer-trace.json"} {
		for i, ex := range loadEigenExchanges(t, file) {
			if strings.HasPrefix(ex.uri(), "/_matrix/key/") {
				continue
			}
			destination := "127.0.0.1:3002"
			if ex.URL != "" {
				destination = strings.SplitN(strings.TrimPrefix(ex.URL, "http://"), "/", 2)[0]
			} else if to, ok := strings.CutPrefix(ex.Dir, "fake->"); ok {
				destination = to
			}
			err := verifyEigenExchange(t, kr, &ex, destination, ex.RequestBody)
			if ex.header("Authorization") == "" {
				var fedErr *Error
				if !errors.As(err, &fedErr) || fedErr.Status != http.StatusUnauthorized || fedErr.ErrCode != ErrCodeForbidden {
					t.Errorf("%s #%d without auth: got %v, want 401 M_FORBIDDEN", file, i, err)
				}
				continue
			}
			if ex.XMatrixCheck != "" && ex.XMatrixCheck != "valid" {
				t.Fatalf("%s #%d: unexpected x_matrix_check %q", file, i, ex.XMatrixCheck)
			}
			if err != nil {
				t.Errorf("%s #%d %s %s: %v", file, i, ex.Method, ex.uri(), err)
				continue
			}
			verified++
			// The same header must not verify for another destination, another body or another path.
			if err := verifyEigenExchange(t, kr, &ex, "127.0.0.1:9999", ex.RequestBody); err == nil {
				t.Errorf("%s #%d verified for the wrong destination", file, i)
			}
			if ex.Method != http.MethodGet {
				if err := verifyEigenExchange(t, kr, &ex, destination, []byte(`{"pdus":[]}`)); err == nil {
					t.Errorf("%s #%d verified with another body", file, i)
				}
			}
			ex.Path = ex.uri() + "x"
			if err := verifyEigenExchange(t, kr, &ex, destination, ex.RequestBody); err == nil {
				t.Errorf("%s #%d verified with another path", file, i)
			}
		}
	}
	if verified < 20 {
		t.Errorf("only %d eigen headers verified", verified)
	}
	t.Logf("%d eigen X-Matrix headers verified", verified)
}
