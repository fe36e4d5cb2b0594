package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/lmbridge/lmbridge/linearize/canonicaljson"
	"github.com/lmbridge/lmbridge/linearize/sigverify"
)

// XMatrixAuth is one X-Matrix Authorization header.
type XMatrixAuth struct {
	Origin      string
	Destination string
	KeyID       string
	Signature   string
}

// String formats the header as Matrix and eigen send it, with "sig".
func (a XMatrixAuth) String() string {
	return `X-Matrix origin=` + strconv.Quote(a.Origin) + `,destination=` + strconv.Quote(a.Destination) +
		`,key=` + strconv.Quote(a.KeyID) + `,sig=` + strconv.Quote(a.Signature)
}

var ErrMalformedXMatrix = errors.New("malformed X-Matrix header")

// ParseXMatrixAuth parses an Authorization header of the X-Matrix scheme. Parameter values may be quoted or bare;
// the signature is read from "sig" or from "signature" (the draft's prose), and unknown parameters are ignored.
func ParseXMatrixAuth(header string) (XMatrixAuth, error) {
	var auth XMatrixAuth
	scheme, params, ok := strings.Cut(strings.TrimSpace(header), " ")
	if !ok || !strings.EqualFold(scheme, "X-Matrix") {
		return auth, fmt.Errorf("%w: scheme is not X-Matrix", ErrMalformedXMatrix)
	}
	rest := strings.TrimSpace(params)
	for rest != "" {
		name, after, ok := strings.Cut(rest, "=")
		if !ok {
			return auth, fmt.Errorf("%w: parameter without value", ErrMalformedXMatrix)
		}
		name = strings.ToLower(strings.TrimSpace(name))
		after = strings.TrimLeft(after, " \t")
		var value string
		if strings.HasPrefix(after, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(after) && after[i] != '"'; i++ {
				if after[i] == '\\' && i+1 < len(after) {
					i++
				}
				b.WriteByte(after[i])
			}
			if i >= len(after) {
				return auth, fmt.Errorf("%w: unterminated quoted value", ErrMalformedXMatrix)
			}
			value, rest = b.String(), after[i+1:]
		} else {
			value, rest, _ = strings.Cut(after, ",")
			value = strings.TrimSpace(value)
			rest = "," + rest
		}
		rest = strings.TrimSpace(rest)
		if rest != "" {
			if rest[0] != ',' {
				return auth, fmt.Errorf("%w: expected a comma after %s", ErrMalformedXMatrix, name)
			}
			rest = strings.TrimSpace(rest[1:])
		}
		switch name {
		case "origin":
			auth.Origin = value
		case "destination":
			auth.Destination = value
		case "key":
			auth.KeyID = value
		case "sig", "signature":
			auth.Signature = value
		}
	}
	if auth.Origin == "" || auth.KeyID == "" || auth.Signature == "" {
		return auth, fmt.Errorf("%w: origin, key and sig are required", ErrMalformedXMatrix)
	}
	return auth, nil
}

type signableRequest struct {
	Method      string          `json:"method"`
	URI         string          `json:"uri"`
	Origin      string          `json:"origin"`
	Destination string          `json:"destination"`
	Content     json.RawMessage `json:"content,omitempty"`
}

// canonical builds the canonical JSON of the request by hand around the canonicalised content, so that a large body
// goes through canonicalisation once rather than twice (marshal, then sort).
func (r *signableRequest) canonical() ([]byte, error) {
	var content []byte
	if r.Content != nil {
		var err error
		if content, err = canonicalise(r.Content); err != nil {
			return nil, fmt.Errorf("failed to canonicalise request content: %w", err)
		}
	}
	return r.canonicalWith(content)
}

// canonicalise is the canonical JSON of a request body, the Matrix specification's (control characters as \u00xx in
// lower case, as Synapse and Dendrite write them). A number canonical JSON has no form for (a float, an integer beyond
// ±(2^53−1), which no LM request carries but a Matrix peer's might) is kept as written, as mautrix's and Dendrite's
// encoders keep it, so that such a request verifies as it did; see canonicaljson.ParseLoose.
func canonicalise(data []byte) ([]byte, error) {
	return canonicaljson.CanonicalizeLoose(data)
}

func (r *signableRequest) canonicalWith(canonicalContent []byte) ([]byte, error) {
	// Keys in code-point order: content, destination, method, origin, uri.
	var buf bytes.Buffer
	buf.Grow(len(canonicalContent) + len(r.URI) + 128)
	buf.WriteByte('{')
	if canonicalContent != nil {
		buf.WriteString(`"content":`)
		buf.Write(canonicalContent)
		buf.WriteByte(',')
	}
	for i, field := range [...][2]string{{"destination", r.Destination}, {"method", r.Method}, {"origin", r.Origin}, {"uri", r.URI}} {
		if !utf8.ValidString(field[1]) {
			return nil, fmt.Errorf("failed to canonicalise request %s: %w", field[0], canonicaljson.ErrInvalidUTF8)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.WriteString(`"` + field[0] + `":`)
		buf.Write(canonicaljson.AppendString(buf.AvailableBuffer(), field[1]))
	}
	buf.WriteByte('}')
	return buf.Bytes(), nil
}

// SignRequest returns the X-Matrix Authorization header for a request. uri is the path with its query as sent on the
// wire; content is the JSON body, nil for a bodiless request (content is then left out, as Matrix and eigen do).
func SignRequest(key *SigningKey, origin, destination, method, uri string, content []byte) (string, error) {
	return signRequest(key, origin, destination, method, uri, content, false)
}

// signRequest is SignRequest; canonical says that content is canonical JSON already, so it is signed as it is.
func signRequest(key *SigningKey, origin, destination, method, uri string, content []byte, canonical bool) (string, error) {
	r := &signableRequest{Method: method, URI: uri, Origin: origin, Destination: destination, Content: content}
	var msg []byte
	var err error
	if canonical {
		msg, err = r.canonicalWith(content)
	} else {
		msg, err = r.canonical()
	}
	if err != nil {
		return "", err
	}
	return XMatrixAuth{
		Origin:      origin,
		Destination: destination,
		KeyID:       string(key.ID),
		Signature:   base64.RawStdEncoding.EncodeToString(key.SignCanonicalJSON(msg)),
	}.String(), nil
}

func forbidden(format string, args ...any) *Error {
	return Errorf(http.StatusUnauthorized, ErrCodeForbidden, format, args...)
}

// VerifyRequest checks the X-Matrix headers of a request addressed to us (ourName) and returns the origin. Every
// header must verify with a current verify key of the origin, there must be at least one, and all must name the same
// origin and our name as destination. content is the body (nil when there is none); a bodiless request verifies with
// content left out or with content {}, the draft's form. uris are the request target as received, then any other
// spelling of it worth trying (the first that verifies wins). Failures are 401 M_FORBIDDEN *Errors.
func VerifyRequest(ctx context.Context, keys KeyLookup, ourName, method string, uris []string, headers []string, content []byte) (string, error) {
	if len(headers) == 0 {
		return "", forbidden("Missing X-Matrix Authorization header")
	}
	auths := make([]XMatrixAuth, len(headers))
	for i, header := range headers {
		auth, err := ParseXMatrixAuth(header)
		if err != nil {
			return "", forbidden("Bad Authorization header: %s", err.Error())
		}
		if auth.Destination != ourName {
			return "", forbidden("X-Matrix destination %q is not this server (%s)", auth.Destination, ourName)
		}
		if auth.Origin != auths[0].Origin && i > 0 {
			return "", forbidden("X-Matrix headers name different origins")
		}
		auths[i] = auth
	}
	origin := auths[0].Origin
	if content != nil {
		// A body in canonical form already (ours always is) is its own canonical form: try the request as it came
		// first, and canonicalise only if that does not verify. A signature that verifies over the body as it is was
		// made over exactly these bytes, which a signer following the spec signs only in canonical form.
		messages := make([][]byte, 0, len(uris))
		for _, uri := range uris {
			msg, err := (&signableRequest{Method: method, URI: uri, Origin: origin, Destination: ourName}).canonicalWith(content)
			if err != nil {
				return "", Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Request cannot be canonicalised")
			}
			messages = append(messages, msg)
		}
		if verifyAuths(ctx, keys, origin, auths, messages) == nil {
			return origin, nil
		}
	}
	var contents [][]byte
	if content == nil {
		contents = [][]byte{nil, []byte("{}")}
	} else {
		contents = [][]byte{content}
	}
	for i, c := range contents {
		if c == nil {
			continue
		}
		canonical, err := canonicalise(c)
		if err != nil {
			return "", Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Request body cannot be canonicalised")
		}
		contents[i] = canonical
	}
	var messages [][]byte
	for _, uri := range uris {
		for _, c := range contents {
			msg, err := (&signableRequest{Method: method, URI: uri, Origin: origin, Destination: ourName}).canonicalWith(c)
			if err != nil {
				return "", Errorf(http.StatusBadRequest, ErrCodeBadJSON, "Request cannot be canonicalised")
			}
			messages = append(messages, msg)
		}
	}
	if err := verifyAuths(ctx, keys, origin, auths, messages); err != nil {
		return "", err
	}
	return origin, nil
}

// verifyAuths checks that every header's signature verifies over one of messages.
func verifyAuths(ctx context.Context, keys KeyLookup, origin string, auths []XMatrixAuth, messages [][]byte) error {
	for _, auth := range auths {
		sig, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(auth.Signature, "="))
		if err != nil || len(sig) != ed25519.SignatureSize {
			return forbidden("X-Matrix signature is not an unpadded base64 ed25519 signature")
		}
		pub, err := keys.VerifyKey(ctx, origin, auth.KeyID)
		if err != nil {
			return forbidden("Cannot find key %s of %s", auth.KeyID, origin)
		}
		verified := false
		for _, msg := range messages {
			if sigverify.Verify(pub, msg, sig) {
				verified = true
				break
			}
		}
		if !verified {
			return forbidden("X-Matrix signature by %s of %s does not verify", auth.KeyID, origin)
		}
	}
	return nil
}
