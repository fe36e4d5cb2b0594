package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// A transaction sent from canonical PDUs must be what a receiver that canonicalises the body (as Synapse and eigen
// do) expects: the same bytes as the encoded, canonicalised Transaction, signed over that canonical form.
func TestSendCanonicalTransactionIsCanonicalAndVerifies(t *testing.T) {
	key := mustKey(t)
	keys := staticKeys{"a.example " + string(key.ID): key.Priv.Public().(ed25519.PublicKey)}
	type captured struct {
		body []byte
		auth []string
		uri  string
	}
	got := make(chan captured, 1)
	peer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got <- captured{body: body, auth: r.Header.Values("Authorization"), uri: r.URL.RequestURI()}
		WriteJSON(w, http.StatusOK, map[string]any{"failed_pdus": map[string]any{}})
	}))
	t.Cleanup(peer.Close)
	dest := strings.TrimPrefix(peer.URL, "http://")
	client := NewClient("a.example", key, ClientOptions{AllowHTTPPeers: true})
	pdus := []json.RawMessage{json.RawMessage(`{"a":1,"b":"é"}`), json.RawMessage(`{"content":{},"type":"m"}`)}
	if _, err := client.SendCanonicalTransaction(context.Background(), dest, "t1", pdus); err != nil {
		t.Fatal(err)
	}
	c := <-got
	encoded, err := marshalJSON(&Transaction{PDUs: pdus})
	if err != nil {
		t.Fatal(err)
	}
	want, err := canonicalise(encoded)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.body, want) {
		t.Fatalf("body %s, want %s", c.body, want)
	}
	// The receiver's full path (canonicalising the body) must accept the signature: check it without the fast path
	// by verifying the canonical message directly.
	msg, err := (&signableRequest{Method: http.MethodPut, URI: c.uri, Origin: "a.example", Destination: dest, Content: c.body}).canonical()
	if err != nil {
		t.Fatal(err)
	}
	auth, err := ParseXMatrixAuth(c.auth[0])
	if err != nil {
		t.Fatal(err)
	}
	if want := base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(msg)); want != auth.Signature {
		t.Fatalf("signature %s is not the signature of the canonical request", auth.Signature)
	}
	if origin, err := VerifyRequest(context.Background(), keys, dest, http.MethodPut, []string{c.uri}, c.auth, c.body); err != nil || origin != "a.example" {
		t.Fatalf("VerifyRequest: %q, %v", origin, err)
	}
}

// VerifyRequest takes a body in canonical form through its fast path, a body in another form signed over its
// canonical form (as other servers sign) through the full path, and refuses a body that was changed.
func TestVerifyRequestFastAndFullPaths(t *testing.T) {
	key := mustKey(t)
	keys := staticKeys{"a.example " + string(key.ID): key.Priv.Public().(ed25519.PublicKey)}
	ctx := context.Background()
	const uri = "/_matrix/federation/v2/send/t1"
	verify := func(body []byte, header string) error {
		_, err := VerifyRequest(ctx, keys, "b.example", http.MethodPut, []string{uri}, []string{header}, body)
		return err
	}
	canonical := []byte(`{"pdus":[{"a":1}]}`)
	header, err := signRequest(key, "a.example", "b.example", http.MethodPut, uri, canonical, true)
	if err != nil {
		t.Fatal(err)
	}
	if err = verify(canonical, header); err != nil {
		t.Errorf("canonical body: %v", err)
	}
	if err = verify([]byte(`{"pdus":[{"a":2}]}`), header); err == nil {
		t.Error("a changed body verified")
	}
	spaced := []byte(`{ "pdus" : [ { "a" : 1 } ] }`)
	header, err = SignRequest(key, "a.example", "b.example", http.MethodPut, uri, spaced)
	if err != nil {
		t.Fatal(err)
	}
	if err = verify(spaced, header); err != nil {
		t.Errorf("body in another form, signed over its canonical form: %v", err)
	}
	if err = verify([]byte(`{ "pdus" : [ { "a" : 3 } ] }`), header); err == nil {
		t.Error("a changed body in another form verified")
	}
}
