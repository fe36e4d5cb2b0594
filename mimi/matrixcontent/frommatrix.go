package matrixcontent

import (
	"fmt"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
)

// Target is what the bridge knows about a Matrix event bridged to or from MIMI.
type Target struct {
	ID content.MessageID
	// InReplyTo is the target's own inReplyTo, which edits and deletes of it repeat (as in
	// the draft's examples).
	InReplyTo *content.MessageID
	// Reaction is set when the target is a reaction: removing it is an "unlike".
	Reaction bool
}

// FromMatrixOptions carries the bridge's state and I/O into the FromMatrix functions.
type FromMatrixOptions struct {
	// Salt of the new message; draw it with content.NewSalt.
	Salt content.Salt
	// SenderURI and RoomURI go into extensions 1 and 2 when set.
	SenderURI, RoomURI string
	// Target maps a Matrix event ID to the MIMI message it is bridged with.
	Target func(id.EventID) (Target, bool)
	// UserURI maps a Matrix user to a MIMI user URI (mentions).
	UserURI func(id.UserID) (string, bool)
	// Media re-hosts the media of a Matrix event (download, content.SealExternal, upload)
	// and returns the external part; ContentType, Filename and Description left empty are
	// filled from the event.
	Media func(*event.MessageEventContent) (*content.ExternalPart, error)
	// Language of the body part ("" when unknown).
	Language string
}

func (o *FromMatrixOptions) message(body content.NestedPart) *content.Message {
	m := &content.Message{Salt: o.Salt, TopicID: []byte{}, Body: body}
	if o.SenderURI != "" {
		_ = m.SetExtension(content.IntKey(content.ExtSenderURI), o.SenderURI)
	}
	if o.RoomURI != "" {
		_ = m.SetExtension(content.IntKey(content.ExtRoomURI), o.RoomURI)
	}
	return m
}

func (o *FromMatrixOptions) target(evID id.EventID) (Target, bool) {
	if o.Target == nil || evID == "" {
		return Target{}, false
	}
	return o.Target(evID)
}

// MessageFromMatrix maps an m.room.message: text (HTML becomes GFM-MIMI markdown, plain
// text stays text/plain), media (an external part from opts.Media), replies (inReplyTo) and
// edits (replaces, with the edited message's inReplyTo).
func MessageFromMatrix(c *event.MessageEventContent, opts FromMatrixOptions) (*content.Message, error) {
	var replaces, inReplyTo *content.MessageID
	body := c
	if c.RelatesTo != nil && c.RelatesTo.Type == event.RelReplace {
		t, ok := opts.target(c.RelatesTo.EventID)
		if !ok {
			return nil, fmt.Errorf("mapping a Matrix edit of %s: %w", c.RelatesTo.EventID, ErrUnknownTarget)
		}
		replaces, inReplyTo = &t.ID, t.InReplyTo
		if c.NewContent != nil {
			body = c.NewContent
		} else {
			trimmed := *c
			trimmed.Body = strings.TrimPrefix(c.Body, "* ")
			trimmed.FormattedBody = strings.TrimPrefix(c.FormattedBody, "* ")
			body = &trimmed
		}
	} else if replyTo := c.RelatesTo.GetReplyTo(); replyTo != "" {
		if t, ok := opts.target(replyTo); ok {
			inReplyTo = &t.ID
		}
	}
	part, err := opts.bodyPart(body, c.RelatesTo.GetReplyTo() != "")
	if err != nil {
		return nil, err
	}
	m := opts.message(part)
	m.Replaces, m.InReplyTo = replaces, inReplyTo
	return m, nil
}

func (o *FromMatrixOptions) bodyPart(c *event.MessageEventContent, reply bool) (content.NestedPart, error) {
	np := content.NestedPart{Disposition: content.DispositionRender, Language: o.Language}
	switch c.MsgType {
	case event.MsgText, event.MsgNotice, event.MsgEmote, "":
		if c.Format == event.FormatHTML && c.FormattedBody != "" {
			md, err := htmlToMarkdown(c.FormattedBody, o.pillLinker())
			if err != nil {
				return np, fmt.Errorf("converting Matrix HTML to markdown: %w", err)
			}
			np.Part = &content.SinglePart{ContentType: content.TypeMarkdown, Content: []byte(md)}
			return np, nil
		}
		text := c.Body
		if reply {
			text = event.TrimReplyFallbackText(text)
		}
		if text == "" {
			return np, ErrEmptyMessage
		}
		np.Part = &content.SinglePart{ContentType: content.TypePlainText, Content: []byte(text)}
		return np, nil
	case event.MsgImage, event.MsgVideo, event.MsgAudio, event.MsgFile:
		if o.Media == nil {
			return np, ErrNoMedia
		}
		ext, err := o.Media(c)
		if err != nil {
			return np, fmt.Errorf("re-hosting Matrix media %s: %w", c.URL, err)
		}
		e := *ext
		if e.ContentType == "" && c.Info != nil {
			e.ContentType = c.Info.MimeType
		}
		if e.Filename == "" {
			e.Filename = c.FileName
			if e.Filename == "" {
				e.Filename = c.Body
			}
		}
		if e.Description == "" && c.FileName != "" && c.Body != c.FileName {
			e.Description = c.Body
		}
		np.Disposition = content.DispositionAttachment
		if c.MsgType == event.MsgImage {
			np.Disposition = content.DispositionInline
		}
		np.Part = &e
		return np, nil
	}
	return np, fmt.Errorf("%w: msgtype %s", ErrUnsupportedEvent, c.MsgType)
}

// pillLinker turns matrix.to user links into MIMI user URIs.
func (o *FromMatrixOptions) pillLinker() func(string) string {
	return func(href string) string {
		if o.UserURI == nil {
			return href
		}
		uri, err := id.ParseMatrixURIOrMatrixToURL(href)
		if err != nil || uri.Sigil1 != '@' {
			return href
		}
		if mimi, ok := o.UserURI(uri.UserID()); ok {
			return mimi
		}
		return href
	}
}

// ReactionFromMatrix maps an m.reaction (annotation) to a MIMI reaction.
func ReactionFromMatrix(c *event.ReactionEventContent, opts FromMatrixOptions) (*content.Message, error) {
	if c.RelatesTo.Type != event.RelAnnotation || c.RelatesTo.Key == "" {
		return nil, fmt.Errorf("%w: reaction without an annotation", ErrUnsupportedEvent)
	}
	t, ok := opts.target(c.RelatesTo.EventID)
	if !ok {
		return nil, fmt.Errorf("mapping a Matrix reaction to %s: %w", c.RelatesTo.EventID, ErrUnknownTarget)
	}
	m := opts.message(content.NestedPart{Disposition: content.DispositionReaction, Language: opts.Language,
		Part: &content.SinglePart{ContentType: content.TypePlainText, Content: []byte(c.RelatesTo.Key)}})
	m.InReplyTo = &t.ID
	return m, nil
}

// RedactionFromMatrix maps the redaction of a bridged event to a MIMI delete (or an unlike,
// when the redacted event is a reaction): replaces it with a null part.
func RedactionFromMatrix(redacts id.EventID, opts FromMatrixOptions) (*content.Message, error) {
	t, ok := opts.target(redacts)
	if !ok {
		return nil, fmt.Errorf("mapping a Matrix redaction of %s: %w", redacts, ErrUnknownTarget)
	}
	disp := content.DispositionRender
	if t.Reaction {
		disp = content.DispositionReaction
	}
	m := opts.message(content.NestedPart{Disposition: disp, Part: &content.NullPart{}})
	m.Replaces, m.InReplyTo = &t.ID, t.InReplyTo
	return m, nil
}
