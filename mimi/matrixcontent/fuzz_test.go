package matrixcontent

import (
	"os"
	"path/filepath"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
)

// FuzzMarkdown: the converters take whatever peers send and must not panic; markdown
// rendering must yield HTML the sanitiser keeps unchanged apart from what it may
// normalise, and HTML → markdown → HTML must not fail.
func FuzzMarkdown(f *testing.F) {
	for _, s := range []string{
		"Hi __Good  work__!", "__*VPN*__ [x](mimi://a/u/b) <https://e.com>", "```go\nx\n```", "> q\n- a\n1. b",
		"| a | b |\n|---|---|\n| 1 | 2 |", "***a**b*c_d_", "`a``b`", "&#x41; &bogus; \\*", "<b>raw</b>",
		"<p>a <strong>b</strong></p><ul><li>c</li></ul><pre><code>d</code></pre>",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h := renderMarkdown(s, func(href string) string { return href })
		if _, err := sanitizeHTML(h, nil, nil); err != nil {
			t.Fatalf("rendered markdown does not parse: %v", err)
		}
		md, err := htmlToMarkdown(s, nil)
		if err != nil {
			return
		}
		_ = renderMarkdown(md, nil)
		if _, err := htmlToText(s); err != nil {
			t.Fatalf("htmlToText: %v", err)
		}
	})
}

// FuzzToMatrix maps any decodable MIMI message without panicking.
func FuzzToMatrix(f *testing.F) {
	paths, _ := filepath.Glob("../content/testdata/head-961ea5a/*.cbor")
	for _, p := range paths {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	opts := ToMatrixOptions{
		EventID:       func(content.MessageID) (id.EventID, bool) { return "$e", true },
		UserID:        userID,
		ExternalMedia: func(*content.ExternalPart) (Uploaded, error) { return Uploaded{URL: "mxc://a/b"}, nil },
		InlineMedia:   func(string, []byte) (Uploaded, error) { return Uploaded{URL: "mxc://a/c"}, nil },
		Languages:     []string{"fr"},
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := content.Decode(b)
		if err != nil {
			return
		}
		_, _ = ToMatrix(m, opts)
	})
}
