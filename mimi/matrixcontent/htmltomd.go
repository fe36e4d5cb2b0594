package matrixcontent

import (
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	xhtml "golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// htmlToMarkdown turns a Matrix formatted_body into GFM-MIMI markdown, the inverse of
// renderMarkdown for the same subset. Strong and emphasis are written with underscores
// (__x__, _x_), as the draft's examples do, and with asterisks where underscores would not
// work (inside a word, or directly inside another underscore emphasis). link rewrites a
// link target (matrix.to pills become MIMI user URIs) or returns "" to keep only the text.
// The Matrix reply fallback (<mx-reply>) is dropped.
func htmlToMarkdown(src string, link func(string) string) (string, error) {
	nodes, err := parseFragment(src)
	if err != nil {
		return "", err
	}
	c := &mdConverter{link: link}
	var out strings.Builder
	c.children(&out, nodes, ctx{})
	return tidyBlocks(out.String()), nil
}

type mdConverter struct {
	link func(string) string
}

type ctx struct {
	pre        bool
	underscore bool // directly inside an emphasis written with underscores
}

var reManyNewlines = regexp.MustCompile(`\n{3,}`)

func tidyBlocks(s string) string {
	lines := strings.Split(s, "\n")
	for i := range lines {
		if strings.TrimSpace(lines[i]) == "" {
			lines[i] = ""
		}
	}
	return strings.Trim(reManyNewlines.ReplaceAllString(strings.Join(lines, "\n"), "\n\n"), "\n")
}

func (c *mdConverter) children(out *strings.Builder, nodes []*xhtml.Node, cx ctx) {
	for i, n := range nodes {
		var next *xhtml.Node
		if i+1 < len(nodes) {
			next = nodes[i+1]
		}
		c.node(out, n, next, cx)
	}
}

func childList(n *xhtml.Node) []*xhtml.Node {
	var out []*xhtml.Node
	for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
		out = append(out, ch)
	}
	return out
}

func (c *mdConverter) inner(n *xhtml.Node, cx ctx) string {
	var b strings.Builder
	c.children(&b, childList(n), cx)
	return b.String()
}

func lastRune(b *strings.Builder) rune {
	r, _ := utf8.DecodeLastRuneInString(b.String())
	return r
}

func firstRuneOf(n *xhtml.Node) rune {
	for ; n != nil; n = n.FirstChild {
		if n.Type == xhtml.TextNode {
			r, _ := utf8.DecodeRuneInString(n.Data)
			return r
		}
	}
	return 0
}

func wordRune(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }

func blockStart(out *strings.Builder) {
	if out.Len() > 0 && !strings.HasSuffix(out.String(), "\n\n") {
		if strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		} else {
			out.WriteString("\n\n")
		}
	}
}

func (c *mdConverter) node(out *strings.Builder, n *xhtml.Node, next *xhtml.Node, cx ctx) {
	switch n.Type {
	case xhtml.TextNode:
		if cx.pre {
			out.WriteString(n.Data)
			return
		}
		text := strings.ReplaceAll(n.Data, "\n", " ")
		if strings.TrimSpace(text) == "" && (out.Len() == 0 || strings.HasSuffix(out.String(), "\n")) {
			return
		}
		out.WriteString(escapeMarkdown(text, out.Len() == 0 || strings.HasSuffix(out.String(), "\n")))
		return
	case xhtml.ElementNode:
	default:
		return
	}
	if droppedWithContent[n.DataAtom] || n.Data == "mx-reply" {
		return
	}
	switch n.DataAtom {
	case atom.Strong, atom.B, atom.Em, atom.I:
		strong := n.DataAtom == atom.Strong || n.DataAtom == atom.B
		intraword := wordRune(lastRune(out)) || wordRune(firstRuneOf(next))
		underscore := !intraword && !cx.underscore
		inner := c.inner(n, ctx{underscore: underscore})
		if strings.TrimSpace(inner) == "" {
			out.WriteString(inner)
			return
		}
		d := "*"
		if underscore {
			d = "_"
		}
		if strong {
			d += d
		}
		// Delimiters must touch the text: move surrounding spaces outside.
		lead := inner[:len(inner)-len(strings.TrimLeft(inner, " "))]
		trail := inner[len(strings.TrimRight(inner, " ")):]
		out.WriteString(lead + d + strings.TrimSpace(inner) + d + trail)
	case atom.Del, atom.S, atom.Strike:
		inner := c.inner(n, ctx{})
		out.WriteString("~~" + inner + "~~")
	case atom.Code:
		if cx.pre {
			out.WriteString(c.textOf(n))
			return
		}
		code := c.textOf(n)
		fence := "`"
		for strings.Contains(code, fence) {
			fence += "`"
		}
		if strings.HasPrefix(code, "`") || strings.HasSuffix(code, "`") {
			code = " " + code + " "
		}
		out.WriteString(fence + code + fence)
	case atom.Pre:
		blockStart(out)
		lang := ""
		if code := n.FirstChild; code != nil && code.DataAtom == atom.Code {
			lang = strings.TrimPrefix(attr(code, "class"), "language-")
		}
		body := strings.TrimSuffix(c.inner(n, ctx{pre: true}), "\n")
		fence := "```"
		for strings.Contains(body, fence) {
			fence += "`"
		}
		out.WriteString(fence + lang + "\n" + body + "\n" + fence + "\n\n")
	case atom.A:
		href := attr(n, "href")
		if c.link != nil {
			href = c.link(href)
		}
		inner := c.inner(n, cx)
		switch {
		case href == "" || !safeHref(href):
			out.WriteString(inner)
		case inner == escapeMarkdown(href, false) && reAutolink.MatchString("<"+href+">"):
			out.WriteString("<" + href + ">")
		default:
			dest := href
			if strings.ContainsAny(dest, " ()<>") {
				dest = "<" + strings.NewReplacer("<", "%3C", ">", "%3E").Replace(dest) + ">"
			}
			out.WriteString("[" + inner + "](" + dest + ")")
		}
	case atom.Br:
		out.WriteString("\n")
	case atom.Img:
		out.WriteString(escapeMarkdown(attr(n, "alt"), false))
	case atom.P, atom.Div, atom.Details, atom.Summary, atom.Caption:
		blockStart(out)
		c.children(out, childList(n), cx)
		out.WriteString("\n\n")
	case atom.H1, atom.H2, atom.H3, atom.H4, atom.H5, atom.H6:
		blockStart(out)
		level := int(n.Data[1] - '0')
		out.WriteString(strings.Repeat("#", level) + " " + strings.TrimSpace(strings.ReplaceAll(c.inner(n, cx), "\n", " ")) + "\n\n")
	case atom.Hr:
		blockStart(out)
		out.WriteString("---\n\n")
	case atom.Blockquote:
		blockStart(out)
		inner := tidyBlocks(c.inner(n, cx))
		for _, line := range strings.Split(inner, "\n") {
			if line == "" {
				out.WriteString(">\n")
			} else {
				out.WriteString("> " + line + "\n")
			}
		}
		out.WriteString("\n")
	case atom.Ul, atom.Ol:
		blockStart(out)
		num := 1
		if v, err := strconv.Atoi(attr(n, "start")); err == nil {
			num = v
		}
		for _, li := range childList(n) {
			if li.Type != xhtml.ElementNode || li.DataAtom != atom.Li {
				continue
			}
			marker := "- "
			if n.DataAtom == atom.Ol {
				marker = strconv.Itoa(num) + ". "
				num++
			}
			item := tidyBlocks(c.inner(li, cx))
			indent := strings.Repeat(" ", len(marker))
			out.WriteString(marker + strings.ReplaceAll(item, "\n", "\n"+indent) + "\n")
		}
		out.WriteString("\n")
	case atom.Table:
		blockStart(out)
		c.table(out, n)
		out.WriteString("\n")
	default:
		c.children(out, childList(n), cx)
	}
}

func (c *mdConverter) textOf(n *xhtml.Node) string {
	var b strings.Builder
	var walk func(*xhtml.Node)
	walk = func(n *xhtml.Node) {
		if n.Type == xhtml.TextNode {
			b.WriteString(n.Data)
		}
		if n.Type == xhtml.ElementNode && n.DataAtom == atom.Br {
			b.WriteString("\n")
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(n)
	return b.String()
}

func (c *mdConverter) table(out *strings.Builder, n *xhtml.Node) {
	var rows [][]string
	var walk func(*xhtml.Node)
	walk = func(n *xhtml.Node) {
		if n.Type == xhtml.ElementNode && n.DataAtom == atom.Tr {
			var row []string
			for _, cell := range childList(n) {
				if cell.Type == xhtml.ElementNode && (cell.DataAtom == atom.Td || cell.DataAtom == atom.Th) {
					text := strings.ReplaceAll(tidyBlocks(c.inner(cell, ctx{})), "\n", " ")
					row = append(row, strings.ReplaceAll(text, "|", `\|`))
				}
			}
			rows = append(rows, row)
			return
		}
		for ch := n.FirstChild; ch != nil; ch = ch.NextSibling {
			walk(ch)
		}
	}
	walk(n)
	if len(rows) == 0 {
		return
	}
	width := 0
	for _, r := range rows {
		width = max(width, len(r))
	}
	line := func(cells []string) {
		for len(cells) < width {
			cells = append(cells, "")
		}
		out.WriteString("| " + strings.Join(cells, " | ") + " |\n")
	}
	line(rows[0])
	sep := make([]string, width)
	for i := range sep {
		sep[i] = "---"
	}
	line(sep)
	for _, r := range rows[1:] {
		line(r)
	}
}

var reEntityLike = regexp.MustCompile(`&(#[0-9]+|#[xX][0-9a-fA-F]+|[A-Za-z][A-Za-z0-9]*);`)

// escapeMarkdown escapes the characters that would otherwise be markup. '<' becomes &lt;
// as the GFM-MIMI "No HTML" extension prescribes; '&' only where it would start an entity.
func escapeMarkdown(s string, lineStart bool) string {
	s = reEntityLike.ReplaceAllString(s, "&amp;$1;")
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch ch {
		case '\\', '*', '_', '`', '[', ']', '~':
			b.WriteByte('\\')
			b.WriteByte(ch)
		case '<':
			b.WriteString("&lt;")
		default:
			b.WriteByte(ch)
		}
	}
	out := b.String()
	if lineStart {
		trimmed := strings.TrimLeft(out, " ")
		if trimmed != "" && strings.ContainsRune("#>-+=|", rune(trimmed[0])) {
			out = out[:len(out)-len(trimmed)] + `\` + trimmed
		} else if m := reOrderedStart.FindStringIndex(trimmed); m != nil {
			pos := len(out) - len(trimmed) + m[1] - 1
			out = out[:pos] + `\` + out[pos:]
		}
	}
	return out
}

var reOrderedStart = regexp.MustCompile(`^\d{1,9}[.)]`)
