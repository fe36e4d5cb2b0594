package matrixcontent

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
)

// The examples of mimi/content, in both revisions, with the framing of their message IDs.
var folders = []struct {
	dir    string
	scheme content.IDScheme
}{
	{"../content/testdata/draft-07", content.IDSchemeDraft07},
	{"../content/testdata/head-961ea5a", content.IDSchemeLengthPrefixed},
}

type examples struct {
	raw  map[string][]byte
	msg  map[string]*content.Message
	ids  map[string]content.MessageID
	name map[content.MessageID]string
}

func loadExamples(t *testing.T, dir string, scheme content.IDScheme) *examples {
	t.Helper()
	ex := &examples{raw: map[string][]byte{}, msg: map[string]*content.Message{}, ids: map[string]content.MessageID{}, name: map[content.MessageID]string{}}
	paths, _ := filepath.Glob(filepath.Join(dir, "*.cbor"))
	for _, p := range paths {
		n := filepath.Base(p[:len(p)-len(".cbor")])
		if n == "implied-original" || n == "report" {
			continue
		}
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		m, err := content.Decode(b)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		sender, _ := m.SenderURI()
		room, _ := m.RoomURI()
		mid, err := content.ComputeMessageID(scheme, sender, room, b)
		if err != nil {
			t.Fatal(err)
		}
		ex.raw[n], ex.msg[n], ex.ids[n], ex.name[mid] = b, m, mid, n
	}
	if len(ex.msg) < 14 {
		t.Fatalf("%s: %d message examples", dir, len(ex.msg))
	}
	return ex
}

// The bridge's tables, as the tests imagine them: each example became event $<name>, each
// MIMI user u/<name> is Matrix user @<name>:example.com.
func (ex *examples) eventID(mid content.MessageID) (id.EventID, bool) {
	n, ok := ex.name[mid]
	return id.EventID("$" + n), ok
}

func userID(uri string) (id.UserID, bool) {
	const prefix = "mimi://example.com/u/"
	if len(uri) <= len(prefix) || uri[:len(prefix)] != prefix {
		return "", false
	}
	return id.NewUserID(uri[len(prefix):], "example.com"), true
}

func userURI(u id.UserID) (string, bool) {
	if u.Homeserver() != "example.com" {
		return "", false
	}
	return "mimi://example.com/u/" + u.Localpart(), true
}

func (ex *examples) target(evID id.EventID) (Target, bool) {
	n := string(evID)[1:]
	m, ok := ex.msg[n]
	if !ok {
		return Target{}, false
	}
	return Target{ID: ex.ids[n], InReplyTo: m.InReplyTo, Reaction: m.Body.Disposition == content.DispositionReaction}, true
}

type mediaLog struct {
	external []*content.ExternalPart
	inline   []string
}

func (ex *examples) toOptions(log *mediaLog) ToMatrixOptions {
	return ToMatrixOptions{
		EventID: ex.eventID,
		UserID:  userID,
		ExternalMedia: func(p *content.ExternalPart) (Uploaded, error) {
			log.external = append(log.external, p)
			return Uploaded{URL: "mxc://example.org/external", Size: int(p.Size)}, nil
		},
		InlineMedia: func(ct string, data []byte) (Uploaded, error) {
			log.inline = append(log.inline, ct)
			return Uploaded{URL: id.ContentURIString("mxc://example.org/inline-" + ct[len("image/"):]), Size: len(data)}, nil
		},
	}
}

func msgContent(t *testing.T, ev Event) *event.MessageEventContent {
	t.Helper()
	if ev.Type != event.EventMessage {
		t.Fatalf("event type %s, want m.room.message", ev.Type.Type)
	}
	return ev.Content.(*event.MessageEventContent)
}

func TestToMatrixExamples(t *testing.T) {
	for _, f := range folders {
		ex := loadExamples(t, f.dir, f.scheme)
		t.Run(filepath.Base(f.dir), func(t *testing.T) {
			log := &mediaLog{}
			opts := ex.toOptions(log)
			to := func(name string) []Event {
				t.Helper()
				evs, err := ToMatrix(ex.msg[name], opts)
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				return evs
			}
			one := func(name string) *event.MessageEventContent {
				t.Helper()
				evs := to(name)
				if len(evs) != 1 {
					t.Fatalf("%s: %d events", name, len(evs))
				}
				return msgContent(t, evs[0])
			}
			noMentions := &event.Mentions{}

			c := one("original")
			want := &event.MessageEventContent{MsgType: event.MsgText, Body: "Hi everyone, we just shipped release 2.0. __Good  work__!",
				Format: event.FormatHTML, FormattedBody: "Hi everyone, we just shipped release 2.0. <strong>Good  work</strong>!", Mentions: noMentions}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("original:\n got  %+v\n want %+v", c, want)
			}

			c = one("reply")
			if c.RelatesTo.GetReplyTo() != "$original" || c.FormattedBody != "Right on! <em>Congratulations</em> &#39;all!" {
				t.Errorf("reply: %+v", c)
			}

			evs := to("reaction")
			if len(evs) != 1 || evs[0].Type != event.EventReaction {
				t.Fatalf("reaction: %+v", evs)
			}
			if r := evs[0].Content.(*event.ReactionEventContent); r.RelatesTo.Type != event.RelAnnotation || r.RelatesTo.EventID != "$original" || r.RelatesTo.Key != "❤" {
				t.Errorf("reaction: %+v", r.RelatesTo)
			}

			for name, target := range map[string]id.EventID{"unlike": "$reaction", "delete": "$reply"} {
				evs := to(name)
				if len(evs) != 1 || evs[0].Type != event.EventRedaction || evs[0].Content.(*event.RedactionEventContent).Redacts != target {
					t.Errorf("%s: %+v, want redaction of %s", name, evs, target)
				}
			}

			c = one("edit")
			if c.RelatesTo.GetReplaceID() != "$reply" || c.NewContent == nil ||
				c.NewContent.FormattedBody != "Right on! <em>Congratulations</em> y&#39;all!" || c.Body != "* Right on! _Congratulations_ y'all!" ||
				c.NewContent.RelatesTo != nil || c.RelatesTo.GetReplyTo() != "" {
				t.Errorf("edit: %+v new %+v", c, c.NewContent)
			}

			alice := []id.UserID{"@alice-smith:example.com"}
			for name, formatted := range map[string]string{
				"mention":      `Kudos to <a href="https://matrix.to/#/@alice-smith:example.com">@Alice Smith</a> for making the release happen!`,
				"mention-html": `<p>Kudos to <a href="https://matrix.to/#/@alice-smith:example.com">@Alice Smith</a> for making the release happen!</p>`,
			} {
				c := one(name)
				if c.FormattedBody != formatted || !reflect.DeepEqual(c.Mentions.UserIDs, alice) || c.RelatesTo.GetReplyTo() != "$original" {
					t.Errorf("%s: %q, mentions %+v, reply %s", name, c.FormattedBody, c.Mentions, c.RelatesTo.GetReplyTo())
				}
			}
			if c := one("mention-html"); c.Body != "Kudos to @Alice Smith for making the release happen!" {
				t.Errorf("mention-html body %q", c.Body)
			}

			c = one("expiring")
			if c.FormattedBody != "<strong><em>VPN GOING DOWN</em></strong> I&#39;m rebooting the VPN in ten minutes unless anyone objects." {
				t.Errorf("expiring: %q", c.FormattedBody)
			}

			c = one("attachment")
			want = &event.MessageEventContent{MsgType: event.MsgVideo, Body: "2 hours of key signing video", FileName: "bigfile.mp4",
				URL: "mxc://example.org/external", Info: &event.FileInfo{MimeType: "video/mp4", Size: 708234961}, Mentions: noMentions}
			if !reflect.DeepEqual(c, want) {
				t.Errorf("attachment:\n got  %+v\n want %+v", c, want)
			}
			if len(log.external) != 1 || log.external[0].URL != "https://example.com/storage/8ksB4bSrrRE.mp4" {
				t.Errorf("external media requests: %+v", log.external)
			}

			c = one("conferencing")
			if c.Body != "Join the Foo 118 conference: https://example.com/join/12345" ||
				c.FormattedBody != `<a href="https://example.com/join/12345">Join the Foo 118 conference</a>` {
				t.Errorf("conferencing: %+v", c)
			}

			if c := one("multipart-1"); c.FormattedBody != "<h1>Welcome!</h1>" || c.Body != "# Welcome!" {
				t.Errorf("multipart-1: %+v", c)
			}

			// Three reactions to no message: shown as text, one event each.
			evs = to("multipart-2")
			var got []string
			for _, ev := range evs {
				got = append(got, msgContent(t, ev).Body)
			}
			if !reflect.DeepEqual(got, []string{"❤", "🥳", "🤞"}) {
				t.Errorf("multipart-2: %q", got)
			}

			// The GIF alternative, in French: the HTML embeds part 5, which is uploaded once and
			// not posted again on its own.
			log.inline = nil
			fr := opts
			fr.Languages = []string{"fr"}
			evs, err := ToMatrix(ex.msg["multipart-3"], fr)
			if err != nil || len(evs) != 1 {
				t.Fatalf("multipart-3: %+v, %v", evs, err)
			}
			c = msgContent(t, evs[0])
			if c.FormattedBody != "<h1>Bienvenue!</h1>\n<img src=\"mxc://example.org/inline-gif\" alt=\"Image bienvenue\">" ||
				c.Body != "Bienvenue!\nImage bienvenue" || !reflect.DeepEqual(log.inline, []string{"image/gif"}) {
				t.Errorf("multipart-3: %+v, uploads %v", c, log.inline)
			}
			// English is the default (first) choice; without inline uploads the image's alt text
			// stays and the GIF part is skipped as unshowable.
			noInline := opts
			noInline.InlineMedia = nil
			evs, err = ToMatrix(ex.msg["multipart-3"], noInline)
			if err != nil || len(evs) != 1 || msgContent(t, evs[0]).FormattedBody != "<h1>Welcome!</h1>\nWelcome image" {
				t.Errorf("multipart-3 without uploads: %+v, %v", evs, err)
			}
		})
	}
}

// TestRoundTripExamples bridges each example to Matrix and back: the MIMI message that
// comes back is byte for byte the example, so its message ID is the same too.
func TestRoundTripExamples(t *testing.T) {
	names := []string{"original", "reply", "reaction", "unlike", "edit", "delete", "mention", "attachment"}
	for _, f := range folders {
		ex := loadExamples(t, f.dir, f.scheme)
		for _, name := range names {
			t.Run(filepath.Base(f.dir)+"/"+name, func(t *testing.T) {
				m := ex.msg[name]
				log := &mediaLog{}
				evs, err := ToMatrix(m, ex.toOptions(log))
				if err != nil || len(evs) != 1 {
					t.Fatalf("to Matrix: %+v, %v", evs, err)
				}
				sender, _ := m.SenderURI()
				room, _ := m.RoomURI()
				lang := m.Body.Language
				opts := FromMatrixOptions{Salt: m.Salt, SenderURI: sender, RoomURI: room, Target: ex.target, UserURI: userURI, Language: lang,
					Media: func(c *event.MessageEventContent) (*content.ExternalPart, error) {
						// What re-hosting yields: where the sealed copy lives and how to open it.
						orig := log.external[0]
						return &content.ExternalPart{URL: orig.URL, Size: orig.Size, EncAlg: orig.EncAlg, Key: orig.Key, Nonce: orig.Nonce,
							AAD: orig.AAD, HashAlg: orig.HashAlg, ContentHash: orig.ContentHash}, nil
					}}
				var back *content.Message
				switch evs[0].Type {
				case event.EventMessage:
					back, err = MessageFromMatrix(evs[0].Content.(*event.MessageEventContent), opts)
				case event.EventReaction:
					back, err = ReactionFromMatrix(evs[0].Content.(*event.ReactionEventContent), opts)
				case event.EventRedaction:
					back, err = RedactionFromMatrix(evs[0].Content.(*event.RedactionEventContent).Redacts, opts)
				}
				if err != nil {
					t.Fatalf("from Matrix: %v", err)
				}
				b, err := back.Encode()
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(b, ex.raw[name]) {
					t.Errorf("round trip differs\n got  %x\n want %x", b, ex.raw[name])
				}
				if mid, _ := content.ComputeMessageID(f.scheme, sender, room, b); mid != ex.ids[name] {
					t.Errorf("message ID %s, want %s", mid, ex.ids[name])
				}
			})
		}
	}
}

func TestFromMatrix(t *testing.T) {
	ex := loadExamples(t, folders[1].dir, folders[1].scheme)
	opts := FromMatrixOptions{Target: ex.target, UserURI: userURI}

	m, err := MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgText, Body: "plain *not markdown*"}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Body.Part.(*content.SinglePart); s.ContentType != content.TypePlainText || string(s.Content) != "plain *not markdown*" {
		t.Errorf("plain: %+v", s)
	}
	if len(m.Extensions) != 0 {
		t.Errorf("extensions without URIs: %+v", m.Extensions)
	}

	// A reply with its fallback: the fallback goes, the reply relation stays.
	reply := &event.MessageEventContent{MsgType: event.MsgText, Body: "> <@bob:example.com> quoted\n\nanswer",
		Format: event.FormatHTML, FormattedBody: "<mx-reply><blockquote>quoted</blockquote></mx-reply>answer <b>now</b>",
		RelatesTo: (&event.RelatesTo{}).SetReplyTo("$original")}
	m, err = MessageFromMatrix(reply, opts)
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Body.Part.(*content.SinglePart); string(s.Content) != "answer __now__" || m.InReplyTo == nil || *m.InReplyTo != ex.ids["original"] {
		t.Errorf("reply: %q, inReplyTo %v", s.Content, m.InReplyTo)
	}
	reply.Format, reply.FormattedBody = "", ""
	if m, _ = MessageFromMatrix(reply, opts); string(m.Body.Part.(*content.SinglePart).Content) != "answer" {
		t.Errorf("plain reply fallback kept: %q", m.Body.Part.(*content.SinglePart).Content)
	}
	// A reply to an event the bridge does not know is sent as a plain message.
	m, err = MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgText, Body: "x", RelatesTo: (&event.RelatesTo{}).SetReplyTo("$unknown")}, opts)
	if err != nil || m.InReplyTo != nil {
		t.Errorf("reply to unknown: %+v, %v", m, err)
	}
	// An edit without m.new_content falls back to the body minus its "* ".
	m, err = MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgText, Body: "* fixed", RelatesTo: (&event.RelatesTo{}).SetReplace("$reply")}, opts)
	if err != nil || string(m.Body.Part.(*content.SinglePart).Content) != "fixed" || *m.Replaces != ex.ids["reply"] || *m.InReplyTo != ex.ids["original"] {
		t.Errorf("edit fallback: %+v, %v", m, err)
	}
	image := &event.MessageEventContent{MsgType: event.MsgImage, Body: "cat.png", URL: "mxc://e/cat", Info: &event.FileInfo{MimeType: "image/png", Size: 10}}
	opts.Media = func(*event.MessageEventContent) (*content.ExternalPart, error) {
		return &content.ExternalPart{URL: "https://media.example.com/cat"}, nil
	}
	m, err = MessageFromMatrix(image, opts)
	if err != nil {
		t.Fatal(err)
	}
	if e := m.Body.Part.(*content.ExternalPart); m.Body.Disposition != content.DispositionInline || e.ContentType != "image/png" || e.Filename != "cat.png" || e.Description != "" {
		t.Errorf("image: %v %+v", m.Body.Disposition, e)
	}

	rejects := []struct {
		name string
		do   func() error
		want error
	}{
		{"edit of unknown", func() error {
			_, err := MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgText, Body: "x", RelatesTo: (&event.RelatesTo{}).SetReplace("$nope")}, opts)
			return err
		}, ErrUnknownTarget},
		{"reaction to unknown", func() error {
			c := &event.ReactionEventContent{}
			c.RelatesTo.SetAnnotation("$nope", "👍")
			_, err := ReactionFromMatrix(c, opts)
			return err
		}, ErrUnknownTarget},
		{"reaction without key", func() error {
			_, err := ReactionFromMatrix(&event.ReactionEventContent{}, opts)
			return err
		}, ErrUnsupportedEvent},
		{"redaction of unknown", func() error { _, err := RedactionFromMatrix("$nope", opts); return err }, ErrUnknownTarget},
		{"location", func() error {
			_, err := MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgLocation, Body: "here", GeoURI: "geo:1,2"}, opts)
			return err
		}, ErrUnsupportedEvent},
		{"media without re-hosting", func() error {
			o := opts
			o.Media = nil
			_, err := MessageFromMatrix(image, o)
			return err
		}, ErrNoMedia},
		{"empty text", func() error {
			_, err := MessageFromMatrix(&event.MessageEventContent{MsgType: event.MsgText}, opts)
			return err
		}, ErrEmptyMessage},
	}
	for _, r := range rejects {
		if err := r.do(); !errors.Is(err, r.want) {
			t.Errorf("%s: %v, want %v", r.name, err, r.want)
		}
	}
}

func TestToMatrixRejects(t *testing.T) {
	ex := loadExamples(t, folders[1].dir, folders[1].scheme)
	opts := ex.toOptions(&mediaLog{})
	unknown := content.MessageID{0x01, 0x99}
	del := *ex.msg["delete"]
	del.Replaces = &unknown
	react := *ex.msg["reaction"]
	react.InReplyTo = &unknown
	vendor := *ex.msg["original"]
	vendor.Body = content.NestedPart{Part: &content.SinglePart{ContentType: "application/vnd.example", Content: []byte{1}}}
	attach := *ex.msg["attachment"]
	noMedia := opts
	noMedia.ExternalMedia = nil
	null := *ex.msg["original"]
	null.Body = content.NestedPart{Part: &content.NullPart{}}
	cases := []struct {
		name string
		m    *content.Message
		opts ToMatrixOptions
		want error
	}{
		{"delete of unknown", &del, opts, ErrUnknownTarget},
		{"reaction to unknown", &react, opts, ErrUnknownTarget},
		{"vendor format only", &vendor, opts, ErrUnsupportedContent},
		{"attachment without re-hosting", &attach, noMedia, ErrNoMedia},
		{"null part, nothing replaced", &null, opts, ErrEmptyMessage},
	}
	for _, c := range cases {
		if _, err := ToMatrix(c.m, c.opts); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// An edit of a message the bridge never saw becomes a new message.
	edit := *ex.msg["edit"]
	edit.Replaces = &unknown
	evs, err := ToMatrix(&edit, opts)
	if err != nil || len(evs) != 1 || msgContent(t, evs[0]).RelatesTo.GetReplaceID() != "" || msgContent(t, evs[0]).RelatesTo.GetReplyTo() != "$original" {
		t.Errorf("edit of unknown: %+v, %v", evs, err)
	}
	// A changed reaction: the old one is redacted, the new one sent.
	change := *ex.msg["reaction"]
	reactionID := ex.ids["reaction"]
	change.Replaces = &reactionID
	evs, err = ToMatrix(&change, opts)
	if err != nil || len(evs) != 2 || evs[0].Type != event.EventRedaction || evs[1].Type != event.EventReaction {
		t.Errorf("changed reaction: %+v, %v", evs, err)
	}
}
