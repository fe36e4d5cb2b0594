package matrixcontent

import (
	"html"
	"regexp"
	"strconv"
	"strings"

	xhtml "golang.org/x/net/html"
	"golang.org/x/net/html/atom"
)

// allowedTags are the tags the Matrix client-server specification suggests clients keep in
// formatted_body (§"m.room.message msgtypes", m.text); others are dropped, their text kept.
var allowedTags = map[atom.Atom]bool{
	atom.Font: true, atom.Del: true, atom.H1: true, atom.H2: true, atom.H3: true, atom.H4: true,
	atom.H5: true, atom.H6: true, atom.Blockquote: true, atom.P: true, atom.A: true, atom.Ul: true,
	atom.Ol: true, atom.Sup: true, atom.Sub: true, atom.Li: true, atom.B: true, atom.I: true,
	atom.U: true, atom.Strong: true, atom.Em: true, atom.S: true, atom.Strike: true, atom.Code: true, atom.Hr: true,
	atom.Br: true, atom.Div: true, atom.Table: true, atom.Thead: true, atom.Tbody: true, atom.Tr: true,
	atom.Th: true, atom.Td: true, atom.Caption: true, atom.Pre: true, atom.Span: true, atom.Img: true,
	atom.Details: true, atom.Summary: true,
}

// droppedWithContent are elements whose content is not text for a reader.
var droppedWithContent = map[atom.Atom]bool{
	atom.Head: true, atom.Script: true, atom.Style: true, atom.Title: true, atom.Template: true,
	atom.Iframe: true, atom.Object: true, atom.Noscript: true,
}

var voidTags = map[atom.Atom]bool{atom.Br: true, atom.Hr: true, atom.Img: true}

func parseFragment(src string) ([]*xhtml.Node, error) {
	body := &xhtml.Node{Type: xhtml.ElementNode, Data: "body", DataAtom: atom.Body}
	nodes, err := xhtml.ParseFragment(strings.NewReader(src), body)
	if err != nil {
		return nil, err
	}
	// A whole document (as in the draft's multipart example) parses into html/head/body;
	// keep what is inside body.
	var out []*xhtml.Node
	for _, n := range nodes {
		if n.Type == xhtml.ElementNode && (n.DataAtom == atom.Html || n.DataAtom == atom.Body) {
			out = append(out, unwrapDocument(n)...)
			continue
		}
		out = append(out, n)
	}
	return out, nil
}

func unwrapDocument(n *xhtml.Node) []*xhtml.Node {
	var out []*xhtml.Node
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == xhtml.ElementNode && (c.DataAtom == atom.Html || c.DataAtom == atom.Body) {
			out = append(out, unwrapDocument(c)...)
		} else {
			out = append(out, c)
		}
	}
	return out
}

// sanitizeHTML keeps the Matrix subset of src. link rewrites a href (mentions, or "" to
// drop the link); img maps an image source to an mxc URI ("" drops the image, keeping its
// alt text).
func sanitizeHTML(src string, link func(string) string, img func(string) string) (string, error) {
	nodes, err := parseFragment(src)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	for _, n := range nodes {
		writeSanitized(&out, n, link, img)
	}
	return strings.TrimSpace(out.String()), nil
}

func writeSanitized(out *strings.Builder, n *xhtml.Node, link, img func(string) string) {
	switch n.Type {
	case xhtml.TextNode:
		out.WriteString(html.EscapeString(n.Data))
		return
	case xhtml.ElementNode:
	default:
		return
	}
	if droppedWithContent[n.DataAtom] {
		return
	}
	children := func() {
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			writeSanitized(out, c, link, img)
		}
	}
	if !allowedTags[n.DataAtom] {
		children()
		return
	}
	var attrs []string
	switch n.DataAtom {
	case atom.A:
		href := attr(n, "href")
		if link != nil {
			href = link(href)
		}
		if href == "" || !safeHref(href) {
			children()
			return
		}
		attrs = append(attrs, `href="`+html.EscapeString(href)+`"`)
	case atom.Img:
		src := ""
		if img != nil {
			src = img(attr(n, "src"))
		}
		if src == "" {
			out.WriteString(html.EscapeString(attr(n, "alt")))
			return
		}
		attrs = append(attrs, `src="`+html.EscapeString(src)+`"`)
		for _, k := range []string{"alt", "title", "width", "height"} {
			if v := attr(n, k); v != "" {
				attrs = append(attrs, k+`="`+html.EscapeString(v)+`"`)
			}
		}
	case atom.Ol:
		if v, err := strconv.Atoi(attr(n, "start")); err == nil {
			attrs = append(attrs, `start="`+strconv.Itoa(v)+`"`)
		}
	case atom.Code:
		if v := attr(n, "class"); strings.HasPrefix(v, "language-") && !strings.ContainsAny(v, ` "`) {
			attrs = append(attrs, `class="`+html.EscapeString(v)+`"`)
		}
	case atom.Span, atom.Font:
		for _, k := range []string{"data-mx-color", "data-mx-bg-color", "data-mx-spoiler"} {
			if v, ok := attrOK(n, k); ok {
				attrs = append(attrs, k+`="`+html.EscapeString(v)+`"`)
			}
		}
	}
	out.WriteString("<" + n.Data)
	for _, a := range attrs {
		out.WriteString(" " + a)
	}
	out.WriteString(">")
	if voidTags[n.DataAtom] {
		return
	}
	children()
	out.WriteString("</" + n.Data + ">")
}

func attr(n *xhtml.Node, key string) string {
	v, _ := attrOK(n, key)
	return v
}

func attrOK(n *xhtml.Node, key string) (string, bool) {
	for _, a := range n.Attr {
		if a.Namespace == "" && a.Key == key {
			return a.Val, true
		}
	}
	return "", false
}

var reSpaces = regexp.MustCompile(`[ \t\r\n\f]+`)

var blockTags = map[atom.Atom]bool{
	atom.P: true, atom.Div: true, atom.H1: true, atom.H2: true, atom.H3: true, atom.H4: true, atom.H5: true,
	atom.H6: true, atom.Blockquote: true, atom.Pre: true, atom.Ul: true, atom.Ol: true, atom.Li: true,
	atom.Table: true, atom.Tr: true, atom.Hr: true, atom.Details: true, atom.Summary: true,
}

// htmlToText is the plain-text body for an HTML message: text with block elements on
// lines of their own and links shown by their text.
func htmlToText(src string) (string, error) {
	nodes, err := parseFragment(src)
	if err != nil {
		return "", err
	}
	var out strings.Builder
	var walk func(*xhtml.Node)
	walk = func(n *xhtml.Node) {
		switch n.Type {
		case xhtml.TextNode:
			// HTML whitespace rules: runs collapse, and nothing starts a line with a space.
			text := reSpaces.ReplaceAllString(n.Data, " ")
			if out.Len() == 0 || strings.HasSuffix(out.String(), "\n") {
				text = strings.TrimLeft(text, " ")
			}
			out.WriteString(text)
			return
		case xhtml.ElementNode:
		default:
			return
		}
		if droppedWithContent[n.DataAtom] {
			return
		}
		switch n.DataAtom {
		case atom.Br:
			out.WriteString("\n")
			return
		case atom.Img:
			out.WriteString(attr(n, "alt"))
			return
		}
		block := blockTags[n.DataAtom]
		if block && out.Len() > 0 && !strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		}
		if n.DataAtom == atom.Li {
			out.WriteString("- ")
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
		if block && !strings.HasSuffix(out.String(), "\n") {
			out.WriteString("\n")
		}
	}
	for _, n := range nodes {
		walk(n)
	}
	lines := strings.Split(out.String(), "\n")
	for i := range lines {
		lines[i] = strings.TrimRight(lines[i], " \t")
	}
	return strings.Trim(strings.Join(lines, "\n"), "\n"), nil
}

// safeSchemes are the link schemes passed on; others (javascript:, data:, …) lose the link
// and keep its text.
var safeSchemes = map[string]bool{
	"http": true, "https": true, "ftp": true, "mailto": true, "magnet": true, "mimi": true,
	"im": true, "matrix": true, "xmpp": true, "sip": true, "sips": true, "tel": true, "geo": true,
}

func safeHref(href string) bool {
	scheme, _, ok := strings.Cut(href, ":")
	return ok && safeSchemes[strings.ToLower(scheme)]
}
