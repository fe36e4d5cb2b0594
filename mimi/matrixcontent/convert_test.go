package matrixcontent

import (
	"strings"
	"testing"
)

func TestRenderMarkdown(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Hi everyone, we just shipped release 2.0. __Good  work__!", "<p>Hi everyone, we just shipped release 2.0. <strong>Good  work</strong>!</p>"},
		{"Right on! _Congratulations_ y'all!", "<p>Right on! <em>Congratulations</em> y&#39;all!</p>"},
		{"__*VPN GOING DOWN*__ I'm rebooting", "<p><strong><em>VPN GOING DOWN</em></strong> I&#39;m rebooting</p>"},
		{"***both***", "<p><em><strong>both</strong></em></p>"},
		{"**a*", "<p>*<em>a</em></p>"},
		{"snake_case_name and 2*3*4", "<p>snake_case_name and 2<em>3</em>4</p>"},
		{"~~gone~~ ~one~ ~~~no~~~", "<p><del>gone</del> <del>one</del> ~~~no~~~</p>"},
		{"`a <b>` and ``x`y``", "<p><code>a &lt;b&gt;</code> and <code>x`y</code></p>"},
		{"<b>raw</b> & &amp; &lt; &#x41;", "<p>&lt;b&gt;raw&lt;/b&gt; &amp; &amp; &lt; A</p>"},
		{`\*not\* \_em\_`, "<p>*not* _em_</p>"},
		{"[text](https://example.com/a_b) [t](<https://x/y z> \"title\")", `<p><a href="https://example.com/a_b">text</a> <a href="https://x/y z">t</a></p>`},
		{"[x](javascript:alert(1))", "<p>x</p>"},
		{"<mimi://example.com/u/alice-smith> <https://e.com>", `<p><a href="mimi://example.com/u/alice-smith">mimi://example.com/u/alice-smith</a> <a href="https://e.com">https://e.com</a></p>`},
		{"![alt](https://e.com/i.png)", `<p><a href="https://e.com/i.png">alt</a></p>`},
		{"[not a link] (x)", "<p>[not a link] (x)</p>"},
		{"line one\nline two", "<p>line one<br>line two</p>"},
		{"# Welcome!", "<h1>Welcome!</h1>"},
		{"### Three ###", "<h3>Three</h3>"},
		{"#nospace", "<p>#nospace</p>"},
		{"para\n\n---\n\nnext", "<p>para</p>\n<hr>\n<p>next</p>"},
		{"```go\nx := 1 < 2\n```", "<pre><code class=\"language-go\">x := 1 &lt; 2\n</code></pre>"},
		{"> quoted\n> **more**", "<blockquote>\n<p>quoted<br><strong>more</strong></p>\n</blockquote>"},
		{"- one\n- two\n  cont\n* other", "<ul>\n<li>one</li>\n<li>two<br>cont</li>\n</ul>\n<ul>\n<li>other</li>\n</ul>"},
		{"3. c\n4. d", "<ol start=\"3\">\n<li>c</li>\n<li>d</li>\n</ol>"},
		{"- [ ] task", "<ul>\n<li>[ ] task</li>\n</ul>"},
		{"| a | b |\n|:--|--:|\n| 1 | 2 \\| 3 |", "<table>\n<thead>\n<tr><th align=\"left\">a</th><th align=\"right\">b</th></tr>\n</thead>\n<tbody>\n<tr><td align=\"left\">1</td><td align=\"right\">2 | 3</td></tr>\n</tbody>\n</table>"},
		{"unclosed `code and **bold", "<p>unclosed `code and **bold</p>"},
	}
	for _, c := range cases {
		if got := renderMarkdown(c.in, nil); got != c.want {
			t.Errorf("%q:\n got  %q\n want %q", c.in, got, c.want)
		}
	}
	// The link function sees every target and may rewrite it.
	var seen []string
	got := renderMarkdown("Kudos to [@Alice Smith](mimi://example.com/u/alice-smith)!", func(h string) string {
		seen = append(seen, h)
		return "https://matrix.to/#/@alice:example.org"
	})
	if got != `<p>Kudos to <a href="https://matrix.to/#/@alice:example.org">@Alice Smith</a>!</p>` || len(seen) != 1 || seen[0] != "mimi://example.com/u/alice-smith" {
		t.Errorf("link rewrite: %q, %v", got, seen)
	}
}

func TestHTMLToMarkdown(t *testing.T) {
	cases := []struct{ in, want string }{
		{"Hi everyone, we just shipped release 2.0. <strong>Good  work</strong>!", "Hi everyone, we just shipped release 2.0. __Good  work__!"},
		{"<strong><em>VPN GOING DOWN</em></strong> now", "__*VPN GOING DOWN*__ now"},
		{"in<b>side</b>word and <i>x</i>", "in**side**word and _x_"},
		{"<b> spaced </b>", " __spaced__ "},
		{"<del>old</del> <code>a`b</code>", "~~old~~ ``a`b``"},
		{"<p>one</p><p>two<br>three</p>", "one\n\ntwo\nthree"},
		{"<h2>Title</h2><ul><li>a</li><li>b</li></ul><ol start=\"2\"><li>c</li></ol>", "## Title\n\n- a\n- b\n\n2. c"},
		{"<blockquote><p>q</p><p>r</p></blockquote>", "> q\n>\n> r"},
		{"<pre><code class=\"language-go\">x := 1\n</code></pre>", "```go\nx := 1\n```"},
		{`<a href="https://e.com/x">text</a> <a href="https://e.com">https://e.com</a> <a href="javascript:x">js</a>`, "[text](https://e.com/x) <https://e.com> js"},
		{"<mx-reply><blockquote>fallback</blockquote></mx-reply>answer", "answer"},
		{"1 < 2 & 3 &lt;b&gt; *x* _y_ [z]", `1 &lt; 2 & 3 &lt;b> \*x\* \_y\_ \[z\]`},
		{"<p># not a heading</p><p>- not a list</p><p>1. not ordered</p>", `\# not a heading` + "\n\n" + `\- not a list` + "\n\n" + `1\. not ordered`},
		{"<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>x|y</td></tr></table>", "| a | b |\n| --- | --- |\n| 1 | x\\|y |"},
		{"<script>alert(1)</script><img src=\"mxc://a/b\" alt=\"pic\">", "pic"},
		{"&amp;lt; stays", "&amp;lt; stays"},
	}
	for _, c := range cases {
		got, err := htmlToMarkdown(c.in, nil)
		if err != nil || got != c.want {
			t.Errorf("%q:\n got  %q (%v)\n want %q", c.in, got, err, c.want)
		}
	}
}

// TestMarkdownRoundTrip: what htmlToMarkdown writes, renderMarkdown reads back to the same
// HTML (for HTML already in the converters' subset).
func TestMarkdownRoundTrip(t *testing.T) {
	for _, h := range []string{
		"<p>Hi <strong>there</strong> and <em>you</em></p>",
		"<p><strong><em>both</em></strong> in<strong>word</strong></p>",
		"<p>a &lt;tag&gt; *stars* [brackets] _under_ ~tilde~</p>",
		"<p><del>old</del> <code>x &lt; y</code></p>",
		"<h2>Title</h2>\n<ul>\n<li>one</li>\n<li>two</li>\n</ul>",
		`<p><a href="https://example.com/a">link</a></p>`,
		"<blockquote>\n<p>quoted</p>\n</blockquote>",
		"<pre><code class=\"language-sh\">echo *hi*\n</code></pre>",
	} {
		md, err := htmlToMarkdown(h, nil)
		if err != nil {
			t.Fatal(err)
		}
		if back := renderMarkdown(md, nil); back != h {
			t.Errorf("%q → %q → %q", h, md, back)
		}
	}
}

func TestSanitizeHTML(t *testing.T) {
	in := `<html><head><title>t</title><style>x{}</style></head><body onload="x()"><h1 class="c">Hi</h1>` +
		`<script>alert(1)</script><a href="javascript:alert(1)">js</a> <a href="https://e.com" onclick="x">ok</a>` +
		`<img src="https://tracker/x.png" alt="remote"> <img src="cid:5@local.invalid" alt="embedded">` +
		`<code class="language-go">x</code><iframe src="https://e.com"></iframe><custom>kept text</custom></body></html>`
	got, err := sanitizeHTML(in, nil, func(src string) string {
		if src == "cid:5@local.invalid" {
			return "mxc://example.org/gif"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	want := `<h1>Hi</h1>js <a href="https://e.com">ok</a>remote <img src="mxc://example.org/gif" alt="embedded"><code class="language-go">x</code>kept text`
	if got != want {
		t.Errorf("sanitized:\n got  %q\n want %q", got, want)
	}
	text, err := htmlToText("<p>one <b>two</b></p><ul><li>a</li><li>b</li></ul>tail<br>end")
	if err != nil || text != "one two\n- a\n- b\ntail\nend" {
		t.Errorf("htmlToText: %q, %v", text, err)
	}
	if strings.Contains(got, "script") || strings.Contains(got, "onclick") {
		t.Errorf("dangerous markup kept: %q", got)
	}
}
