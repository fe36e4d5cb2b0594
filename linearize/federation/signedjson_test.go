package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// synapseVectors is testdata/synapse_xmatrix.json: X-Matrix signatures made by Synapse's own signing code and
// libraries (testdata/synapse_xmatrix.py says how), an implementation nobody on this project wrote.
type synapseVectors struct {
	Seed        string `json:"seed"`
	KeyID       string `json:"key_id"`
	Origin      string `json:"origin"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	URI         string `json:"uri"`
	Cases       []struct {
		// Content is the body as Synapse's json.dumps sends it (members in insertion order), null for none.
		Content   *string `json:"content"`
		Canonical string  `json:"canonical"`
		Signature string  `json:"signature"`
	} `json:"cases"`
}

func seedKey(t *testing.T, keyID, seed string) *SigningKey {
	t.Helper()
	raw, err := base64.RawStdEncoding.DecodeString(seed)
	if err != nil || len(raw) != ed25519.SeedSize {
		t.Fatalf("bad seed %q: %v", seed, err)
	}
	priv := ed25519.NewKeyFromSeed(raw)
	pub := priv.Public().(ed25519.PublicKey)
	return &SigningKey{ID: id.KeyID(keyID), Pub: id.SigningKey(base64.RawStdEncoding.EncodeToString(pub)), Priv: priv}
}

// TestXMatrixMatchesSynapse signs the requests Synapse signed with the same key: our canonical form and signature
// must be Synapse's byte for byte (control characters as \u00xx in lower case, keys in code-point order, a float and
// an integer beyond 2^53 as written), and Synapse's signatures must verify here, over the body as Synapse sent it and
// over the same body re-encoded the way another sender might (whitespace, upper-case escapes), which only the
// canonical form can match.
func TestXMatrixMatchesSynapse(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("testdata", "synapse_xmatrix.json"))
	if err != nil {
		t.Fatal(err)
	}
	var v synapseVectors
	if err = json.Unmarshal(raw, &v); err != nil {
		t.Fatal(err)
	}
	key := seedKey(t, v.KeyID, v.Seed)
	keys := staticKeys{v.Origin + " " + v.KeyID: key.Priv.Public().(ed25519.PublicKey)}
	for i, c := range v.Cases {
		var content []byte
		if c.Content != nil {
			content = []byte(*c.Content)
		}
		msg, err := (&signableRequest{Method: v.Method, URI: v.URI, Origin: v.Origin, Destination: v.Destination,
			Content: content}).canonical()
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		if string(msg) != c.Canonical {
			t.Errorf("case %d: canonical form\n got %s\nwant %s", i, msg, c.Canonical)
		}
		header, err := SignRequest(key, v.Origin, v.Destination, v.Method, v.URI, content)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		auth, err := ParseXMatrixAuth(header)
		if err != nil {
			t.Fatal(err)
		}
		if auth.Signature != c.Signature {
			t.Errorf("case %d: signature %s, Synapse's %s", i, auth.Signature, c.Signature)
		}
		theirs := XMatrixAuth{Origin: v.Origin, Destination: v.Destination, KeyID: v.KeyID, Signature: c.Signature}.String()
		bodies := [][]byte{content}
		if content != nil {
			bodies = append(bodies, reencoded(content))
		}
		for _, body := range bodies {
			origin, err := VerifyRequest(context.Background(), keys, v.Destination, v.Method, []string{v.URI},
				[]string{theirs}, body)
			if err != nil || origin != v.Origin {
				t.Errorf("case %d: Synapse's signature over %s: %q, %v", i, body, origin, err)
			}
		}
	}
}

// reencoded is body as a sender that writes JSON differently might send it: spaced out, with control characters in
// upper-case escapes.
func reencoded(body []byte) []byte {
	var sb strings.Builder
	inString := false
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"' && (i == 0 || body[i-1] != '\\'):
			inString = !inString
			sb.WriteByte(c)
		case inString && c == '\\' && i+5 < len(body) && body[i+1] == 'u':
			sb.WriteString(`\u` + strings.ToUpper(string(body[i+2:i+6])))
			i += 5
		case !inString && (c == ',' || c == ':'):
			sb.WriteByte(c)
			sb.WriteString(" \n\t")
		default:
			sb.WriteByte(c)
		}
	}
	return []byte(" " + sb.String() + " ")
}

// TestSignJSONMatchesSpec signs the Matrix specification's signing examples (shared/interop/vectors.json) as the key
// server signs its answers: the signatures must be the specification's, and verify.
func TestSignJSONMatchesSpec(t *testing.T) {
	path := filepath.Join("..", "..", "..", "shared", "interop", "vectors.json")
	if _, err := os.Stat(path); err != nil {
		path = "/work/shared/interop/vectors.json"
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var vectors struct {
		Spec struct {
			ServerName string `json:"server_name"`
			KeyID      string `json:"key_id"`
			Seed       string `json:"seed"`
			Cases      []struct {
				Input     json.RawMessage `json:"input"`
				Signature string          `json:"signature"`
			} `json:"cases"`
		} `json:"matrix_spec_signing"`
	}
	if err = json.Unmarshal(raw, &vectors); err != nil {
		t.Fatal(err)
	}
	spec := vectors.Spec
	if len(spec.Cases) == 0 {
		t.Fatal("no signing examples in vectors.json")
	}
	key := seedKey(t, spec.KeyID, spec.Seed)
	for _, c := range spec.Cases {
		sig, err := signJSON(key, c.Input)
		if err != nil {
			t.Fatal(err)
		}
		if sig != c.Signature {
			t.Errorf("%s: signature %s, the specification's %s", c.Input, sig, c.Signature)
		}
		signed, err := json.Marshal(map[string]any{"signatures": map[string]any{spec.ServerName: map[string]string{spec.KeyID: c.Signature}}})
		if err != nil {
			t.Fatal(err)
		}
		// The object with its signatures added (and an unsigned member, which is not covered).
		obj := append(append([]byte{}, c.Input[:len(c.Input)-1]...), ',')
		if len(c.Input) == 2 {
			obj = obj[:1]
		}
		obj = append(append(obj, `"unsigned":{"age_ts":1},`...), signed[1:]...)
		pub := key.Priv.Public().(ed25519.PublicKey)
		if err = verifyJSON(spec.ServerName, spec.KeyID, pub, obj); err != nil {
			t.Errorf("%s: %v", obj, err)
		}
		if err = verifyJSON(spec.ServerName, "ed25519:other", pub, obj); err == nil {
			t.Errorf("%s: verified under a key ID it was not signed with", obj)
		}
	}
}
