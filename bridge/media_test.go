package bridge

import (
	"context"
	"errors"
	"strings"
	"testing"

	"maunium.net/go/mautrix/id"
)

// prefixMedia maps URIs by rewriting their authority, and records what ToDAG was given.
type prefixMedia struct {
	max   int64
	hints []MediaHint
}

func (p *prefixMedia) ToLM(uri string) string {
	return strings.Replace(uri, "mxc://hs/", "mxc://lm/", 1)
}
func (p *prefixMedia) ToDAG(_ context.Context, uri string, _ id.UserID, hint MediaHint) (string, error) {
	p.hints = append(p.hints, hint)
	return strings.Replace(uri, "mxc://remote/", "mxc://hs/", 1), nil
}
func (p *prefixMedia) MaxBytes() int64 { return p.max }

// TestMediaFieldsRewritten: every place content holds a file (the file, its thumbnail, encrypted attachments, an
// edit's new content, an avatar) is rewritten both ways, and sizes over the limit are refused toward LM.
func TestMediaFieldsRewritten(t *testing.T) {
	m := &prefixMedia{max: 1000}
	br := &Bridge{media: m}
	c := Content{"msgtype": "m.image", "body": "cat.png", "url": "mxc://hs/a",
		"info":          map[string]any{"mimetype": "image/png", "size": float64(999), "thumbnail_url": "mxc://hs/t", "thumbnail_file": map[string]any{"url": "mxc://hs/tf"}},
		"file":          map[string]any{"url": "mxc://hs/f"},
		"m.new_content": map[string]any{"url": "mxc://hs/n", "info": map[string]any{"thumbnail_url": "https://not.mxc/x"}},
		"avatar_url":    "mxc://other/kept"}
	if err := br.mediaToLM(c); err != nil {
		t.Fatal(err)
	}
	for _, got := range []any{c["url"], walkPath(c, "info", "thumbnail_url"), walkPath(c, "info", "thumbnail_file", "url"),
		walkPath(c, "file", "url"), walkPath(c, "m.new_content", "url")} {
		if s, _ := got.(string); !strings.HasPrefix(s, "mxc://lm/") {
			t.Errorf("toward LM a URI is %v, want it under mxc://lm/ (content %v)", got, c)
		}
	}
	if c["avatar_url"] != "mxc://other/kept" || walkPath(c, "m.new_content", "info", "thumbnail_url") != "https://not.mxc/x" {
		t.Errorf("URIs the mapper leaves, and non-mxc strings, changed: %v", c)
	}

	big := Content{"msgtype": "m.file", "url": "mxc://hs/big", "info": map[string]any{"size": float64(1001)}}
	if err := br.mediaToLM(big); !errors.Is(err, ErrMediaRefused) || !isPermanent(err) {
		t.Errorf("a file over the limit toward LM: %v, want a permanent ErrMediaRefused", err)
	}
	bigThumb := Content{"msgtype": "m.image", "info": map[string]any{"size": float64(1), "thumbnail_info": map[string]any{"size": float64(5000)}}}
	if err := br.mediaToLM(bigThumb); !errors.Is(err, ErrMediaRefused) {
		t.Errorf("a thumbnail over the limit toward LM: %v, want ErrMediaRefused", err)
	}

	in := Content{"msgtype": "m.file", "body": "report.pdf", "filename": "report-2026.pdf", "url": "mxc://remote/r",
		"info": map[string]any{"mimetype": "application/pdf", "thumbnail_url": "mxc://remote/rt"}}
	if err := br.mediaToDAG(context.Background(), in, "@ghost:hs"); err != nil {
		t.Fatal(err)
	}
	if in["url"] != "mxc://hs/r" || walkPath(in, "info", "thumbnail_url") != "mxc://hs/rt" {
		t.Errorf("toward Matrix: %v", in)
	}
	if len(m.hints) != 2 || m.hints[0] != (MediaHint{MimeType: "application/pdf", FileName: "report-2026.pdf"}) || m.hints[1] != (MediaHint{}) {
		t.Errorf("hints %+v, want the event's mimetype and file name for the file and none for the thumbnail", m.hints)
	}
}
