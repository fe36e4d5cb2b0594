package content

import (
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
)

// parseEDN reads the subset of CBOR extended diagnostic notation the draft's examples use
// (arrays, maps, unsigned integers, h” and ” byte strings with + concatenation, "" text,
// null/true/false, # and / / comments) into generic values that encMode can write. It is
// lenient about commas, as the examples are (draft-07/expiring.edn misses one), so that it
// checks the values, not the punctuation. It exists to compare each .cbor with its .edn
// through an encoder path that does not involve the package's own types.
func parseEDN(src string) (any, error) {
	p := &ednParser{s: src}
	v, err := p.value()
	if err != nil {
		return nil, err
	}
	p.skip()
	if p.i != len(p.s) {
		return nil, fmt.Errorf("edn: trailing input at %d: %.20q", p.i, p.s[p.i:])
	}
	return v, nil
}

type ednParser struct {
	s string
	i int
}

func (p *ednParser) skip() {
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == ',':
			p.i++
		case c == '#':
			for p.i < len(p.s) && p.s[p.i] != '\n' {
				p.i++
			}
		case c == '/':
			end := strings.IndexByte(p.s[p.i+1:], '/')
			if end < 0 {
				p.i = len(p.s)
				return
			}
			p.i += end + 2
		default:
			return
		}
	}
}

func (p *ednParser) value() (any, error) {
	p.skip()
	if p.i >= len(p.s) {
		return nil, fmt.Errorf("edn: unexpected end")
	}
	switch c := p.s[p.i]; {
	case c == '[':
		p.i++
		arr := []any{}
		for {
			p.skip()
			if p.i < len(p.s) && p.s[p.i] == ']' {
				p.i++
				return arr, nil
			}
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			arr = append(arr, v)
		}
	case c == '{':
		p.i++
		m := map[any]any{}
		for {
			p.skip()
			if p.i < len(p.s) && p.s[p.i] == '}' {
				p.i++
				return m, nil
			}
			k, err := p.value()
			if err != nil {
				return nil, err
			}
			p.skip()
			if p.i >= len(p.s) || p.s[p.i] != ':' {
				return nil, fmt.Errorf("edn: want ':' at %d", p.i)
			}
			p.i++
			v, err := p.value()
			if err != nil {
				return nil, err
			}
			m[k] = v
		}
	case c == 'h' && p.i+1 < len(p.s) && p.s[p.i+1] == '\'', c == '\'':
		return p.byteString()
	case c == '"':
		end := p.i + 1
		for end < len(p.s) && p.s[end] != '"' {
			if p.s[end] == '\\' {
				end++
			}
			end++
		}
		s, err := strconv.Unquote(p.s[p.i : end+1])
		p.i = end + 1
		return s, err
	case c >= '0' && c <= '9' || c == '-':
		start := p.i
		for p.i < len(p.s) && (p.s[p.i] == '-' || (p.s[p.i] >= '0' && p.s[p.i] <= '9')) {
			p.i++
		}
		if p.s[start] == '-' {
			return strconv.ParseInt(p.s[start:p.i], 10, 64)
		}
		return strconv.ParseUint(p.s[start:p.i], 10, 64)
	default:
		for _, w := range []struct {
			word string
			v    any
		}{{"null", nil}, {"true", true}, {"false", false}} {
			if strings.HasPrefix(p.s[p.i:], w.word) {
				p.i += len(w.word)
				return w.v, nil
			}
		}
		return nil, fmt.Errorf("edn: unexpected %q at %d", c, p.i)
	}
}

// byteString reads h'…' or '…' literals joined by +.
func (p *ednParser) byteString() ([]byte, error) {
	var out []byte
	for {
		p.skip()
		if p.s[p.i] == 'h' {
			p.i += 2
			end := strings.IndexByte(p.s[p.i:], '\'')
			if end < 0 {
				return nil, fmt.Errorf("edn: unterminated h''")
			}
			body := p.s[p.i : p.i+end]
			p.i += end + 1
			// Inside h'' the examples use both / / and # comments.
			var hexDigits strings.Builder
			for j := 0; j < len(body); j++ {
				switch c := body[j]; {
				case c == '/':
					k := strings.IndexByte(body[j+1:], '/')
					if k < 0 {
						return nil, fmt.Errorf("edn: unterminated comment in h''")
					}
					j += k + 1
				case c == '#':
					for j < len(body) && body[j] != '\n' {
						j++
					}
				case c == ' ' || c == '\n' || c == '\t':
				default:
					hexDigits.WriteByte(c)
				}
			}
			b, err := hex.DecodeString(hexDigits.String())
			if err != nil {
				return nil, fmt.Errorf("edn: %w", err)
			}
			out = append(out, b...)
		} else {
			p.i++
			for p.i < len(p.s) && p.s[p.i] != '\'' {
				c := p.s[p.i]
				if c == '\\' && p.i+1 < len(p.s) {
					p.i++
					c = p.s[p.i]
					if c == 'n' {
						c = '\n'
					}
				}
				out = append(out, c)
				p.i++
			}
			p.i++
		}
		save := p.i
		p.skip()
		if p.i < len(p.s) && p.s[p.i] == '+' {
			p.i++
			continue
		}
		p.i = save
		if out == nil {
			out = []byte{}
		}
		return out, nil
	}
}

// headerMessageID extracts "message ID = h'…'" from an example's header comment.
func headerMessageID(edn string) (MessageID, bool, error) {
	i := strings.Index(edn, "message ID = h'")
	if i < 0 {
		return MessageID{}, false, nil
	}
	rest := edn[i+len("message ID = h'"):]
	end := strings.IndexByte(rest, '\'')
	if end < 0 {
		return MessageID{}, false, fmt.Errorf("unterminated message ID")
	}
	digits := strings.NewReplacer("#", "", " ", "", "\n", "").Replace(rest[:end])
	b, err := hex.DecodeString(digits)
	if err != nil {
		return MessageID{}, false, err
	}
	id, err := MessageIDFromBytes(b)
	return id, true, err
}

// prettyBytes reads the hex column of a cbor.me-style annotated dump.
func prettyBytes(pretty string) ([]byte, error) {
	var out []byte
	for _, line := range strings.Split(pretty, "\n") {
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		for _, tok := range strings.Fields(line) {
			b, err := hex.DecodeString(tok)
			if err != nil {
				return nil, fmt.Errorf("pretty: %q: %w", tok, err)
			}
			out = append(out, b...)
		}
	}
	return out, nil
}
