package matrixcontent

import (
	"html"
	"regexp"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// renderMarkdown turns GFM-MIMI markdown into the HTML of a Matrix formatted_body. It
// covers the common subset: paragraphs (a line break is kept as <br>, as Matrix clients
// do), ATX headings, fenced code, block quotes, flat lists, GFM tables, thematic breaks,
// and inline code, emphasis, strong, strikethrough, links, autolinks, backslash escapes and
// entities. GFM-MIMI's "No HTML" rule means raw HTML is shown as text, so every '<' that
// does not open an autolink is escaped. link rewrites each link target (mentions become
// matrix.to links) and may return "" to drop the link and keep its text.
func renderMarkdown(src string, link func(href string) string) string {
	src = strings.ReplaceAll(strings.ReplaceAll(src, "\r\n", "\n"), "\r", "\n")
	r := &mdRenderer{link: link}
	var out strings.Builder
	r.blocks(&out, strings.Split(src, "\n"))
	return strings.TrimSuffix(out.String(), "\n")
}

type mdRenderer struct {
	link  func(string) string
	depth int
}

// Bounds that keep rendering linear in hostile input.
const (
	maxLinkLabel  = 1000
	maxLinkDest   = 4096
	maxQuoteDepth = 16
)

var (
	reHeading  = regexp.MustCompile(`^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$`)
	reFence    = regexp.MustCompile("^( {0,3})(`{3,}|~{3,})[ \t]*([^`]*)$")
	reHR       = regexp.MustCompile(`^ {0,3}((\*[ \t]*){3,}|(-[ \t]*){3,}|(_[ \t]*){3,})$`)
	reQuote    = regexp.MustCompile(`^ {0,3}> ?`)
	reBullet   = regexp.MustCompile(`^ {0,3}([-*+])[ \t]+(.*)$`)
	reOrdered  = regexp.MustCompile(`^ {0,3}(\d{1,9})([.)])[ \t]+(.*)$`)
	reTableSep = regexp.MustCompile(`^ {0,3}\|?[ \t]*:?-+:?[ \t]*(\|[ \t]*:?-+:?[ \t]*)*\|?[ \t]*$`)
)

func blank(line string) bool { return strings.TrimSpace(line) == "" }

// startsBlock reports whether line interrupts a paragraph.
func (r *mdRenderer) startsBlock(line string) bool {
	return reHeading.MatchString(line) || reFence.MatchString(line) || reHR.MatchString(line) ||
		(reQuote.MatchString(line) && r.depth < maxQuoteDepth) || reBullet.MatchString(line) || reOrdered.MatchString(line)
}

func (r *mdRenderer) blocks(out *strings.Builder, lines []string) {
	for i := 0; i < len(lines); {
		line := lines[i]
		switch {
		case blank(line):
			i++
		case reFence.MatchString(line):
			m := reFence.FindStringSubmatch(line)
			fence, info := m[2], strings.TrimSpace(m[3])
			var code []string
			i++
			for ; i < len(lines); i++ {
				t := strings.TrimLeft(lines[i], " ")
				if strings.HasPrefix(t, fence[:1]) && strings.Trim(t, fence[:1]+" \t") == "" && len(strings.TrimRight(t, " \t")) >= len(fence) {
					i++
					break
				}
				code = append(code, lines[i])
			}
			out.WriteString("<pre><code")
			if lang, _, _ := strings.Cut(info, " "); lang != "" {
				out.WriteString(` class="language-` + html.EscapeString(decodeEscapes(lang)) + `"`)
			}
			out.WriteString(">")
			for _, c := range code {
				out.WriteString(html.EscapeString(c) + "\n")
			}
			out.WriteString("</code></pre>\n")
		case reHeading.MatchString(line):
			m := reHeading.FindStringSubmatch(line)
			n := strconv.Itoa(len(m[1]))
			out.WriteString("<h" + n + ">" + r.inline(m[2]) + "</h" + n + ">\n")
			i++
		case reHR.MatchString(line):
			out.WriteString("<hr>\n")
			i++
		case reQuote.MatchString(line) && r.depth < maxQuoteDepth:
			var inner []string
			for ; i < len(lines) && reQuote.MatchString(lines[i]); i++ {
				inner = append(inner, reQuote.ReplaceAllString(lines[i], ""))
			}
			out.WriteString("<blockquote>\n")
			r.depth++
			r.blocks(out, inner)
			r.depth--
			out.WriteString("</blockquote>\n")
		case reBullet.MatchString(line) || reOrdered.MatchString(line):
			i = r.list(out, lines, i)
		case i+1 < len(lines) && strings.Contains(line, "|") && reTableSep.MatchString(lines[i+1]):
			i = r.table(out, lines, i)
		default:
			var para []string
			for ; i < len(lines) && !blank(lines[i]) && (len(para) == 0 || !r.startsBlock(lines[i])); i++ {
				para = append(para, lines[i])
			}
			out.WriteString("<p>" + r.inline(strings.Join(para, "\n")) + "</p>\n")
		}
	}
}

// list renders consecutive items of one kind; continuation lines indented by two or more
// spaces belong to the item above.
func (r *mdRenderer) list(out *strings.Builder, lines []string, i int) int {
	ordered := reOrdered.MatchString(lines[i])
	marker := ""
	if ordered {
		m := reOrdered.FindStringSubmatch(lines[i])
		marker = m[2]
		if start, _ := strconv.Atoi(m[1]); start != 1 {
			out.WriteString(`<ol start="` + strconv.Itoa(start) + `">` + "\n")
		} else {
			out.WriteString("<ol>\n")
		}
	} else {
		marker = reBullet.FindStringSubmatch(lines[i])[1]
		out.WriteString("<ul>\n")
	}
	var item []string
	flush := func() {
		if item != nil {
			out.WriteString("<li>" + r.inline(strings.Join(item, "\n")) + "</li>\n")
		}
		item = nil
	}
	for ; i < len(lines); i++ {
		line := lines[i]
		if ordered {
			if m := reOrdered.FindStringSubmatch(line); m != nil && m[2] == marker {
				flush()
				item = []string{m[3]}
				continue
			}
		} else if m := reBullet.FindStringSubmatch(line); m != nil && m[1] == marker {
			flush()
			item = []string{m[2]}
			continue
		}
		if item != nil && !blank(line) && strings.HasPrefix(line, "  ") {
			item = append(item, strings.TrimLeft(line, " "))
			continue
		}
		break
	}
	flush()
	if ordered {
		out.WriteString("</ol>\n")
	} else {
		out.WriteString("</ul>\n")
	}
	return i
}

func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimPrefix(line, "|")
	if strings.HasSuffix(line, "|") && !strings.HasSuffix(line, `\|`) {
		line = line[:len(line)-1]
	}
	var cells []string
	var cur strings.Builder
	for j := 0; j < len(line); j++ {
		if line[j] == '\\' && j+1 < len(line) && line[j+1] == '|' {
			cur.WriteByte('|')
			j++
			continue
		}
		if line[j] == '|' {
			cells = append(cells, strings.TrimSpace(cur.String()))
			cur.Reset()
			continue
		}
		cur.WriteByte(line[j])
	}
	return append(cells, strings.TrimSpace(cur.String()))
}

func (r *mdRenderer) table(out *strings.Builder, lines []string, i int) int {
	header := splitRow(lines[i])
	var aligns []string
	for _, c := range splitRow(lines[i+1]) {
		switch {
		case strings.HasPrefix(c, ":") && strings.HasSuffix(c, ":"):
			aligns = append(aligns, "center")
		case strings.HasSuffix(c, ":"):
			aligns = append(aligns, "right")
		case strings.HasPrefix(c, ":"):
			aligns = append(aligns, "left")
		default:
			aligns = append(aligns, "")
		}
	}
	cell := func(tag string, j int, text string) {
		out.WriteString("<" + tag)
		if j < len(aligns) && aligns[j] != "" {
			out.WriteString(` align="` + aligns[j] + `"`)
		}
		out.WriteString(">" + r.inline(text) + "</" + tag + ">")
	}
	out.WriteString("<table>\n<thead>\n<tr>")
	for j, h := range header {
		cell("th", j, h)
	}
	out.WriteString("</tr>\n</thead>\n")
	i += 2
	if i < len(lines) && !blank(lines[i]) && strings.Contains(lines[i], "|") {
		out.WriteString("<tbody>\n")
		for ; i < len(lines) && !blank(lines[i]) && strings.Contains(lines[i], "|"); i++ {
			row := splitRow(lines[i])
			out.WriteString("<tr>")
			for j := range header {
				text := ""
				if j < len(row) {
					text = row[j]
				}
				cell("td", j, text)
			}
			out.WriteString("</tr>\n")
		}
		out.WriteString("</tbody>\n")
	}
	out.WriteString("</table>\n")
	return i
}

// inline node: literal HTML, or a delimiter run that emphasis processing may turn into tags.
type inlineNode struct {
	html  string
	delim *delimRun
}

type delimRun struct {
	char              byte
	count, orig       int
	canOpen, canClose bool
	openTags          []string // rendered after the remaining characters, last match first
	closeTags         []string // rendered before the remaining characters, first match first
}

func isPunct(r rune) bool { return unicode.IsPunct(r) || unicode.IsSymbol(r) }

func (r *mdRenderer) inline(s string) string {
	var nodes []inlineNode
	var text strings.Builder
	flushText := func() {
		if text.Len() > 0 {
			nodes = append(nodes, inlineNode{html: html.EscapeString(text.String())})
			text.Reset()
		}
	}
	raw := func(h string) {
		flushText()
		nodes = append(nodes, inlineNode{html: h})
	}
	for i := 0; i < len(s); {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s) && s[i+1] == '\n':
			raw("<br>")
			i += 2
		case c == '\\' && i+1 < len(s) && isASCIIPunct(s[i+1]):
			text.WriteByte(s[i+1])
			i += 2
		case c == '\n':
			raw("<br>")
			i++
		case c == '`':
			n := runLen(s, i, '`')
			if end := findCodeClose(s, i+n, n); end >= 0 {
				code := strings.ReplaceAll(s[i+n:end], "\n", " ")
				if len(code) >= 2 && code[0] == ' ' && code[len(code)-1] == ' ' && strings.Trim(code, " ") != "" {
					code = code[1 : len(code)-1]
				}
				raw("<code>" + html.EscapeString(code) + "</code>")
				i = end + n
			} else {
				text.WriteString(s[i : i+n])
				i += n
			}
		case c == '&':
			if dec, n := entity(s[i:]); n > 0 {
				text.WriteString(dec)
				i += n
			} else {
				text.WriteByte('&')
				i++
			}
		case c == '<':
			if uri, n := autolink(s[i:]); n > 0 {
				raw(r.anchor(uri, html.EscapeString(uri)))
				i += n
			} else {
				text.WriteByte('<')
				i++
			}
		case c == '!' && i+1 < len(s) && s[i+1] == '[':
			if label, dest, n := linkAt(s[i+1:]); n > 0 {
				// Images cannot be shown from arbitrary URLs in Matrix; keep a link.
				raw(r.anchor(dest, r.inline(label)))
				i += 1 + n
			} else {
				text.WriteByte('!')
				i++
			}
		case c == '[':
			if label, dest, n := linkAt(s[i:]); n > 0 {
				raw(r.anchor(dest, r.inline(label)))
				i += n
			} else {
				text.WriteByte('[')
				i++
			}
		case c == '*' || c == '_' || c == '~':
			n := runLen(s, i, c)
			before, _ := utf8.DecodeLastRuneInString(s[:i])
			after, _ := utf8.DecodeRuneInString(s[i+n:])
			if i == 0 {
				before = ' '
			}
			if i+n >= len(s) {
				after = ' '
			}
			wsBefore, wsAfter := unicode.IsSpace(before), unicode.IsSpace(after)
			pBefore, pAfter := isPunct(before), isPunct(after)
			left := !wsAfter && (!pAfter || wsBefore || pBefore)
			right := !wsBefore && (!pBefore || wsAfter || pAfter)
			d := &delimRun{char: c, count: n, orig: n, canOpen: left, canClose: right}
			if c == '_' {
				d.canOpen = left && (!right || pBefore)
				d.canClose = right && (!left || pAfter)
			}
			if c == '~' && n > 2 {
				d.canOpen, d.canClose = false, false
			}
			flushText()
			nodes = append(nodes, inlineNode{delim: d})
			i += n
		default:
			text.WriteByte(c)
			i++
		}
	}
	flushText()
	processEmphasis(nodes)
	var out strings.Builder
	for _, n := range nodes {
		if n.delim == nil {
			out.WriteString(n.html)
			continue
		}
		d := n.delim
		for _, t := range d.closeTags {
			out.WriteString(t)
		}
		out.WriteString(strings.Repeat(string(d.char), d.count))
		for j := len(d.openTags) - 1; j >= 0; j-- {
			out.WriteString(d.openTags[j])
		}
	}
	return out.String()
}

// processEmphasis matches delimiter runs as CommonMark §6.2 describes (including the "rule
// of three"), and GFM strikethrough (runs of one or two tildes of equal length).
func processEmphasis(nodes []inlineNode) {
	// bottom remembers, per kind of closer, below which index no opener can be found, so a
	// run of unmatched closers costs linear time (CommonMark's openers_bottom).
	type kind struct {
		char    byte
		mod3    int
		canOpen bool
	}
	bottom := map[kind]int{}
	for ci := range nodes {
		closer := nodes[ci].delim
		if closer == nil || !closer.canClose {
			continue
		}
		k := kind{closer.char, closer.orig % 3, closer.canOpen}
		for closer.count > 0 {
			oi := -1
			floor, seen := bottom[k]
			if !seen {
				floor = -1
			}
			for j := ci - 1; j > floor; j-- {
				o := nodes[j].delim
				if o == nil || !o.canOpen || o.count == 0 || o.char != closer.char {
					continue
				}
				if o.char == '~' {
					if o.count != closer.count {
						continue
					}
				} else if (closer.canOpen || o.canClose) && (o.orig+closer.orig)%3 == 0 && !(o.orig%3 == 0 && closer.orig%3 == 0) {
					continue
				}
				oi = j
				break
			}
			if oi < 0 {
				if closer.char != '~' {
					bottom[k] = ci - 1
				}
				break
			}
			opener := nodes[oi].delim
			var open, close string
			use := 1
			switch {
			case closer.char == '~':
				use, open, close = closer.count, "<del>", "</del>"
			case opener.count >= 2 && closer.count >= 2:
				use, open, close = 2, "<strong>", "</strong>"
			default:
				open, close = "<em>", "</em>"
			}
			opener.count -= use
			closer.count -= use
			opener.openTags = append(opener.openTags, open)
			closer.closeTags = append(closer.closeTags, close)
			for j := oi + 1; j < ci; j++ {
				if d := nodes[j].delim; d != nil {
					d.canOpen, d.canClose = false, false
				}
			}
		}
	}
}

func (r *mdRenderer) anchor(dest, inner string) string {
	href := dest
	if r.link != nil {
		href = r.link(dest)
	}
	if href == "" || !safeHref(href) {
		return inner
	}
	return `<a href="` + html.EscapeString(href) + `">` + inner + "</a>"
}

func isASCIIPunct(c byte) bool {
	return strings.IndexByte("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~", c) >= 0
}

func runLen(s string, i int, c byte) int {
	n := 0
	for i+n < len(s) && s[i+n] == c {
		n++
	}
	return n
}

// findCodeClose finds a backtick run of exactly n starting at or after i.
func findCodeClose(s string, i, n int) int {
	for i < len(s) {
		j := strings.IndexByte(s[i:], '`')
		if j < 0 {
			return -1
		}
		j += i
		m := runLen(s, j, '`')
		if m == n {
			return j
		}
		i = j + m
	}
	return -1
}

var namedEntities = map[string]string{"amp": "&", "lt": "<", "gt": ">", "quot": `"`, "apos": "'", "nbsp": "\u00a0"}

// entity decodes an entity or numeric character reference at the start of s.
func entity(s string) (string, int) {
	end := strings.IndexByte(s, ';')
	if end < 2 || end > 10 {
		return "", 0
	}
	name := s[1:end]
	if v, ok := namedEntities[name]; ok {
		return v, end + 1
	}
	if name[0] == '#' && len(name) > 1 {
		var n int64
		var err error
		if name[1] == 'x' || name[1] == 'X' {
			n, err = strconv.ParseInt(name[2:], 16, 32)
		} else {
			n, err = strconv.ParseInt(name[1:], 10, 32)
		}
		if err != nil || n <= 0 || n > unicode.MaxRune || !utf8.ValidRune(rune(n)) {
			return "", 0
		}
		return string(rune(n)), end + 1
	}
	return "", 0
}

var reAutolink = regexp.MustCompile(`^<([A-Za-z][A-Za-z0-9+.\-]{1,31}:[^\s<>]*)>`)

func autolink(s string) (string, int) {
	m := reAutolink.FindStringSubmatch(s)
	if m == nil {
		return "", 0
	}
	return m[1], len(m[0])
}

// linkAt parses [label](destination "title") at the start of s.
func linkAt(s string) (label, dest string, n int) {
	depth := 0
	i := 0
	// Bounded scans keep a paragraph of unmatched brackets linear (CommonMark bounds link
	// labels to 999 characters for the same reason).
	limit := min(len(s), maxLinkLabel)
	for ; i < limit; i++ {
		switch s[i] {
		case '\\':
			i++
		case '`':
			m := runLen(s, i, '`')
			if end := findCodeClose(s, i+m, m); end >= 0 {
				i = end + m - 1
			} else {
				i += m - 1
			}
		case '[':
			depth++
		case ']':
			depth--
		}
		if depth == 0 {
			break
		}
	}
	if i >= limit || i+1 >= len(s) || s[i+1] != '(' {
		return "", "", 0
	}
	label = s[1:i]
	j := i + 2
	for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n') {
		j++
	}
	if j < len(s) && s[j] == '<' {
		end := strings.IndexAny(s[j+1:], ">\n")
		if end < 0 || s[j+1+end] != '>' {
			return "", "", 0
		}
		dest = s[j+1 : j+1+end]
		j += end + 2
	} else {
		start, parens := j, 0
		for ; j < len(s) && j-start < maxLinkDest; j++ {
			c := s[j]
			if c == '\\' && j+1 < len(s) {
				j++
				continue
			}
			if c == '(' {
				parens++
			} else if c == ')' {
				if parens == 0 {
					break
				}
				parens--
			} else if c == ' ' || c == '\t' || c == '\n' || c < 0x20 {
				break
			}
		}
		dest = s[start:j]
	}
	for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n') {
		j++
	}
	if j < len(s) && (s[j] == '"' || s[j] == '\'' || s[j] == '(') {
		closeCh := s[j]
		if closeCh == '(' {
			closeCh = ')'
		}
		end := strings.IndexByte(s[j+1:], closeCh)
		if end < 0 {
			return "", "", 0
		}
		j += end + 2
		for j < len(s) && (s[j] == ' ' || s[j] == '\t' || s[j] == '\n') {
			j++
		}
	}
	if j >= len(s) || s[j] != ')' {
		return "", "", 0
	}
	return label, decodeEscapes(dest), j + 1
}

// decodeEscapes resolves backslash escapes and entities in a link destination.
func decodeEscapes(s string) string {
	var out strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+1 < len(s) && isASCIIPunct(s[i+1]) {
			out.WriteByte(s[i+1])
			i++
			continue
		}
		if s[i] == '&' {
			if dec, n := entity(s[i:]); n > 0 {
				out.WriteString(dec)
				i += n - 1
				continue
			}
		}
		out.WriteByte(s[i])
	}
	return out.String()
}
