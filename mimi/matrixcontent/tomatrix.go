package matrixcontent

import (
	"errors"
	"fmt"
	"html"
	"mime"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
)

// Event is one Matrix event to send for a MIMI message. Content is an
// *event.MessageEventContent, *event.ReactionEventContent or *event.RedactionEventContent.
type Event struct {
	Type    event.Type
	Content any
}

// Uploaded is media the bridge has put into the Matrix content repository.
type Uploaded struct {
	URL  id.ContentURIString
	Size int
}

// ToMatrixOptions carries the bridge's state and I/O into ToMatrix.
type ToMatrixOptions struct {
	// EventID maps a MIMI message ID to the Matrix event bridged from it. An edit must map
	// to the event it edits (Matrix edits always point at the original).
	EventID func(content.MessageID) (id.EventID, bool)
	// UserID maps a MIMI user URI to the Matrix user standing for it (mentions).
	UserID func(uri string) (id.UserID, bool)
	// ExternalMedia fetches (content.ExternalPart.Fetch), and uploads an external part.
	ExternalMedia func(*content.ExternalPart) (Uploaded, error)
	// InlineMedia uploads the bytes of an inline part.
	InlineMedia func(contentType string, data []byte) (Uploaded, error)
	// Languages in order of preference, for choosing among chooseOne alternatives.
	Languages []string
}

// maxFormattedInput is the size of text above which no HTML is rendered: Matrix events are
// limited to 64 KiB, so such a message cannot be sent formatted anyway.
const maxFormattedInput = 65536

// piece is one thing a body part becomes before events are assembled.
type piece struct {
	msg      *event.MessageEventContent // text or media
	reaction string
	mentions []id.UserID
}

type renderer struct {
	opts     ToMatrixOptions
	root     *content.NestedPart
	index    map[*content.NestedPart]int
	consumed map[int]bool
}

// ToMatrix maps a MIMI message to the Matrix events that represent it:
//   - replaces + null part (delete, unlike): a redaction of the replaced event;
//   - reaction parts with inReplyTo: an m.reaction per part (after a redaction of the
//     replaced reaction, if any); without inReplyTo they are shown as text;
//   - otherwise an m.room.message per rendered piece, the first carrying the reply (or, with
//     replaces, the m.replace edit). chooseOne picks one alternative, processAll and
//     singleUnit render every part, skipping parts an HTML part embeds by content ID.
//
// topicId and expires have no Matrix counterpart and are not mapped.
func ToMatrix(m *content.Message, opts ToMatrixOptions) ([]Event, error) {
	lookup := func(mid *content.MessageID) (id.EventID, bool) {
		if mid == nil || opts.EventID == nil {
			return "", false
		}
		return opts.EventID(*mid)
	}
	if _, isNull := m.Body.Part.(*content.NullPart); isNull {
		if m.Replaces == nil {
			return nil, ErrEmptyMessage
		}
		target, ok := lookup(m.Replaces)
		if !ok {
			return nil, fmt.Errorf("mapping a MIMI delete of %s: %w", m.Replaces, ErrUnknownTarget)
		}
		return []Event{{Type: event.EventRedaction, Content: &event.RedactionEventContent{Redacts: target}}}, nil
	}
	r := &renderer{opts: opts, root: &m.Body, index: map[*content.NestedPart]int{}, consumed: map[int]bool{}}
	m.Body.Walk(func(i int, p *content.NestedPart) bool { r.index[p] = i; return true })
	pieces, err := r.render(&m.Body)
	if err != nil {
		return nil, fmt.Errorf("mapping a MIMI message to Matrix: %w", err)
	}

	var events []Event
	var reactions, others []piece
	for _, p := range pieces {
		if p.msg == nil {
			reactions = append(reactions, p)
		} else {
			others = append(others, p)
		}
	}
	if len(reactions) > 0 {
		if m.InReplyTo == nil {
			// Not a reaction to anything: show what was sent.
			for _, p := range reactions {
				others = append(others, piece{msg: &event.MessageEventContent{MsgType: event.MsgText, Body: p.reaction}})
			}
		} else {
			target, ok := lookup(m.InReplyTo)
			if !ok {
				return nil, fmt.Errorf("mapping a MIMI reaction to %s: %w", m.InReplyTo, ErrUnknownTarget)
			}
			if old, ok := lookup(m.Replaces); ok {
				events = append(events, Event{Type: event.EventRedaction, Content: &event.RedactionEventContent{Redacts: old}})
			}
			for _, p := range reactions {
				c := &event.ReactionEventContent{}
				c.RelatesTo.SetAnnotation(target, p.reaction)
				events = append(events, Event{Type: event.EventReaction, Content: c})
			}
		}
	}
	if len(others) == 0 {
		return events, nil
	}

	if edited, ok := lookup(m.Replaces); ok && len(reactions) == 0 {
		p := others[0]
		newContent := *p.msg
		newContent.Mentions = &event.Mentions{UserIDs: p.mentions}
		c := &event.MessageEventContent{
			MsgType: p.msg.MsgType, Body: "* " + p.msg.Body, URL: p.msg.URL, Info: p.msg.Info, FileName: p.msg.FileName,
			NewContent: &newContent, Mentions: &event.Mentions{},
			RelatesTo: (&event.RelatesTo{}).SetReplace(edited),
		}
		if p.msg.Format == event.FormatHTML {
			c.Format, c.FormattedBody = event.FormatHTML, "* "+p.msg.FormattedBody
		}
		return append(events, Event{Type: event.EventMessage, Content: c}), nil
	}
	replyTo, isReply := lookup(m.InReplyTo)
	for i, p := range others {
		p.msg.Mentions = &event.Mentions{UserIDs: p.mentions}
		if i == 0 && isReply {
			p.msg.RelatesTo = (&event.RelatesTo{}).SetReplyTo(replyTo)
		}
		events = append(events, Event{Type: event.EventMessage, Content: p.msg})
	}
	return events, nil
}

func (r *renderer) render(p *content.NestedPart) ([]piece, error) {
	switch part := p.Part.(type) {
	case *content.NullPart:
		return nil, nil
	case *content.SinglePart:
		return r.single(p, part)
	case *content.ExternalPart:
		return r.external(p, part)
	case *content.MultiPart:
		switch part.Semantics {
		case content.ChooseOne:
			var firstErr error
			for _, i := range r.preference(part.Parts) {
				pieces, err := r.render(&part.Parts[i])
				if err == nil && len(pieces) > 0 {
					return pieces, nil
				}
				if firstErr == nil {
					firstErr = err
				}
			}
			if firstErr == nil {
				firstErr = ErrUnsupportedContent
			}
			return nil, firstErr
		default:
			var out []piece
			for i := range part.Parts {
				child := &part.Parts[i]
				if r.consumed[r.index[child]] {
					continue
				}
				pieces, err := r.render(child)
				if err != nil {
					if part.Semantics == content.SingleUnit || !errors.Is(err, ErrUnsupportedContent) {
						return nil, err
					}
					continue
				}
				out = append(out, pieces...)
			}
			if len(out) == 0 {
				return nil, ErrUnsupportedContent
			}
			return out, nil
		}
	}
	return nil, ErrUnsupportedContent
}

func mediaType(ct string) string {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return strings.ToLower(strings.TrimSpace(ct))
	}
	return mt
}

// preference orders chooseOne alternatives: preferred languages first, then the formats
// Matrix shows best (markdown, HTML, plain text, nested parts, media), else sender order.
func (r *renderer) preference(parts []content.NestedPart) []int {
	langRank := func(p *content.NestedPart) int {
		tags, _ := content.Languages(p.Language)
		best := len(r.opts.Languages) + 1
		if len(tags) == 0 {
			best = len(r.opts.Languages)
		}
		for _, t := range tags {
			for i, want := range r.opts.Languages {
				if strings.EqualFold(t, want) || strings.HasPrefix(strings.ToLower(t), strings.ToLower(want)+"-") {
					best = min(best, i)
				}
			}
		}
		return best
	}
	typeRank := func(p *content.NestedPart) int {
		switch part := p.Part.(type) {
		case *content.SinglePart:
			switch mediaType(part.ContentType) {
			case "text/markdown":
				return 0
			case "text/html":
				return 1
			case "text/plain":
				return 2
			}
			return 5
		case *content.MultiPart:
			return 3
		case *content.ExternalPart:
			return 4
		}
		return 6
	}
	order := make([]int, len(parts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int {
		if la, lb := langRank(&parts[a]), langRank(&parts[b]); la != lb {
			return la - lb
		}
		return typeRank(&parts[a]) - typeRank(&parts[b])
	})
	return order
}

// linker rewrites links to MIMI users into matrix.to links and collects the mentions.
func (r *renderer) linker(mentions *[]id.UserID) func(string) string {
	return func(href string) string {
		if strings.HasPrefix(strings.ToLower(href), "mimi:") && r.opts.UserID != nil {
			if uid, ok := r.opts.UserID(href); ok {
				if !slices.Contains(*mentions, uid) {
					*mentions = append(*mentions, uid)
				}
				return uid.URI().MatrixToURL()
			}
		}
		return href
	}
}

// embed uploads the part an HTML image refers to by content ID and marks it as handled.
func (r *renderer) embed(src string) string {
	if strings.HasPrefix(src, "mxc://") {
		return src
	}
	idx, ok := content.ContentIDIndex(src)
	if !ok {
		return ""
	}
	p, ok := r.root.PartAt(idx)
	if !ok {
		return ""
	}
	var up Uploaded
	var err error
	switch part := p.Part.(type) {
	case *content.SinglePart:
		if r.opts.InlineMedia == nil {
			return ""
		}
		up, err = r.opts.InlineMedia(part.ContentType, part.Content)
	case *content.ExternalPart:
		if r.opts.ExternalMedia == nil {
			return ""
		}
		up, err = r.opts.ExternalMedia(part)
	default:
		return ""
	}
	if err != nil {
		return ""
	}
	r.consumed[idx] = true
	return string(up.URL)
}

func (r *renderer) single(p *content.NestedPart, part *content.SinglePart) ([]piece, error) {
	mt := mediaType(part.ContentType)
	text := strings.ToValidUTF8(string(part.Content), "\uFFFD")
	if p.Disposition.Effective() == content.DispositionReaction && strings.HasPrefix(mt, "text/") {
		return []piece{{reaction: strings.TrimSpace(text)}}, nil
	}
	var pc piece
	switch mt {
	case "text/plain":
		pc.msg = &event.MessageEventContent{MsgType: event.MsgText, Body: text}
		return []piece{pc}, nil
	case "text/markdown":
		if len(text) > maxFormattedInput {
			// Larger than any Matrix event can be: send the source as it is.
			pc.msg = &event.MessageEventContent{MsgType: event.MsgText, Body: text}
			return []piece{pc}, nil
		}
		formatted := renderMarkdown(text, r.linker(&pc.mentions))
		if strings.Count(formatted, "<p>") == 1 && strings.HasPrefix(formatted, "<p>") && strings.HasSuffix(formatted, "</p>") {
			formatted = strings.TrimSuffix(strings.TrimPrefix(formatted, "<p>"), "</p>")
		}
		pc.msg = &event.MessageEventContent{MsgType: event.MsgText, Body: text}
		if formatted != html.EscapeString(text) {
			pc.msg.Format, pc.msg.FormattedBody = event.FormatHTML, formatted
		}
		return []piece{pc}, nil
	case "text/html":
		formatted, err := sanitizeHTML(text, r.linker(&pc.mentions), r.embed)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedContent, err)
		}
		plain, err := htmlToText(text)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrUnsupportedContent, err)
		}
		pc.msg = &event.MessageEventContent{MsgType: event.MsgText, Body: plain, Format: event.FormatHTML, FormattedBody: formatted}
		return []piece{pc}, nil
	}
	if r.opts.InlineMedia == nil || !isMedia(mt) {
		return nil, fmt.Errorf("%w: %s", ErrUnsupportedContent, part.ContentType)
	}
	up, err := r.opts.InlineMedia(part.ContentType, part.Content)
	if err != nil {
		return nil, fmt.Errorf("uploading an inline %s part: %w", mt, err)
	}
	return []piece{{msg: mediaContent(mt, up, "", "")}}, nil
}

// isMedia reports whether an inline part of this type is worth posting as a Matrix file;
// vendor formats (application/vnd.*) are alternatives for other clients.
func isMedia(mt string) bool {
	for _, prefix := range []string{"image/", "video/", "audio/"} {
		if strings.HasPrefix(mt, prefix) {
			return true
		}
	}
	return mt == "application/pdf"
}

func (r *renderer) external(p *content.NestedPart, part *content.ExternalPart) ([]piece, error) {
	if p.Disposition.Effective() == content.DispositionSession {
		label := part.Description
		if label == "" {
			label = part.URL
		}
		c := &event.MessageEventContent{MsgType: event.MsgText, Body: label + ": " + part.URL}
		if part.Description == "" {
			c.Body = part.URL
		}
		c.Format = event.FormatHTML
		c.FormattedBody = `<a href="` + html.EscapeString(part.URL) + `">` + html.EscapeString(label) + "</a>"
		return []piece{{msg: c}}, nil
	}
	if r.opts.ExternalMedia == nil {
		return nil, ErrNoMedia
	}
	up, err := r.opts.ExternalMedia(part)
	if err != nil {
		return nil, fmt.Errorf("re-hosting external content %s: %w", part.URL, err)
	}
	return []piece{{msg: mediaContent(mediaType(part.ContentType), up, part.Description, part.Filename)}}, nil
}

func mediaContent(mt string, up Uploaded, description, filename string) *event.MessageEventContent {
	c := &event.MessageEventContent{MsgType: event.MsgFile, URL: up.URL, Info: &event.FileInfo{MimeType: mt, Size: up.Size}, FileName: filename}
	switch {
	case strings.HasPrefix(mt, "image/"):
		c.MsgType = event.MsgImage
	case strings.HasPrefix(mt, "video/"):
		c.MsgType = event.MsgVideo
	case strings.HasPrefix(mt, "audio/"):
		c.MsgType = event.MsgAudio
	}
	switch {
	case description != "":
		c.Body = description
	case filename != "":
		c.Body = filename
	default:
		c.Body = strings.TrimPrefix(string(c.MsgType), "m.")
	}
	if c.FileName == c.Body {
		c.FileName = ""
	}
	return c
}
