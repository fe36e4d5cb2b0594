package protocol

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
)

// WellKnownDirectory is where a provider publishes its Directory.
const WellKnownDirectory = "/.well-known/mimi-protocol-directory"

// Directory maps endpoint names to URL templates (draft §"Directory"), such as
// "https://mimi.example.com/v1/notify/{roomId}".
type Directory struct {
	KeyMaterial     string `json:"keyMaterial"`
	Update          string `json:"update"`
	Notify          string `json:"notify"`
	SubmitMessage   string `json:"submitMessage"`
	GroupInfo       string `json:"groupInfo"`
	RequestConsent  string `json:"requestConsent,omitempty"`
	UpdateConsent   string `json:"updateConsent,omitempty"`
	IdentifierQuery string `json:"identifierQuery,omitempty"`
	ReportAbuse     string `json:"reportAbuse,omitempty"`
	ProxyDownload   string `json:"proxyDownload,omitempty"`
}

// ParseDirectory reads a directory document. The endpoints the room flows need
// (keyMaterial, update, notify, submitMessage, groupInfo) must be present, and every
// template must be an https URL. Unknown members are ignored, as in ACME directories.
func ParseDirectory(b []byte) (*Directory, error) {
	var d Directory
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := dec.Decode(&d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDirectory, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: data after the JSON object", ErrBadDirectory)
	}
	for _, e := range []struct {
		name, tmpl string
		required   bool
	}{
		{"keyMaterial", d.KeyMaterial, true}, {"update", d.Update, true}, {"notify", d.Notify, true},
		{"submitMessage", d.SubmitMessage, true}, {"groupInfo", d.GroupInfo, true},
		{"requestConsent", d.RequestConsent, false}, {"updateConsent", d.UpdateConsent, false},
		{"identifierQuery", d.IdentifierQuery, false}, {"reportAbuse", d.ReportAbuse, false},
		{"proxyDownload", d.ProxyDownload, false},
	} {
		if e.tmpl == "" {
			if e.required {
				return nil, fmt.Errorf("%w: no %s endpoint", ErrBadDirectory, e.name)
			}
			continue
		}
		u, err := url.Parse(strings.NewReplacer("{", "", "}", "").Replace(e.tmpl))
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("%w: %s is not an https URL template: %q", ErrBadDirectory, e.name, e.tmpl)
		}
	}
	return &d, nil
}

// Expand fills a template's {name} variables with path-escaped values (a user or room URI
// such as mimi://b.example/u/bob becomes one path segment).
func Expand(template string, vars map[string]string) (string, error) {
	var out strings.Builder
	for {
		i := strings.IndexByte(template, '{')
		if i < 0 {
			out.WriteString(template)
			return out.String(), nil
		}
		j := strings.IndexByte(template[i:], '}')
		if j < 0 {
			return "", fmt.Errorf("%w: unterminated variable in %q", ErrBadDirectory, template)
		}
		name := template[i+1 : i+j]
		v, ok := vars[name]
		if !ok {
			return "", fmt.Errorf("%w: no value for {%s}", ErrBadDirectory, name)
		}
		out.WriteString(template[:i])
		out.WriteString(url.PathEscape(v))
		template = template[i+j+1:]
	}
}
