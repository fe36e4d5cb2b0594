package rooms

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/mimi/matrixcontent"
	"github.com/lmbridge/lmbridge/remote"
)

const (
	getSendQuery    = `SELECT message_id, content, accepted FROM mimi_rooms_send WHERE room_uri=$1 AND send_key=$2`
	insertSendQuery = `INSERT INTO mimi_rooms_send (room_uri, send_key, message_id, content) VALUES ($1, $2, $3, $4)`
	acceptSendQuery = `UPDATE mimi_rooms_send SET accepted=true WHERE room_uri=$1 AND send_key=$2`

	putMessageQuery = `
		INSERT INTO mimi_rooms_message (message_id, room_uri, root_id, in_reply_to, reaction) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (message_id) DO NOTHING
	`
	getMessageQuery = `SELECT root_id, in_reply_to, reaction FROM mimi_rooms_message WHERE message_id=$1`
)

// idScheme is the message ID framing of the content draft's next version, which mimi/content defaults to.
const idScheme = content.IDSchemeLengthPrefixed

// EventIDOf is the seam event ID of a MIMI message.
func EventIDOf(mid content.MessageID) remote.EventID {
	return remote.EventID("$" + hex.EncodeToString(mid[:]))
}

// MessageIDOf reads a MIMI message ID back from a seam event ID (one of several events a message became included).
func MessageIDOf(evID string) (content.MessageID, bool) {
	s, ok := strings.CutPrefix(evID, "$")
	if !ok {
		return content.MessageID{}, false
	}
	s, _, _ = strings.Cut(s, "-")
	b, err := hex.DecodeString(s)
	if err != nil {
		return content.MessageID{}, false
	}
	mid, err := content.MessageIDFromBytes(b)
	return mid, err == nil
}

// stored is what mimi_rooms_message keeps of a message.
type stored struct {
	root      content.MessageID
	inReplyTo *content.MessageID
	reaction  bool
}

func (r *Rooms) message(ctx context.Context, mid content.MessageID) (*stored, error) {
	var root, reply []byte
	s := &stored{}
	err := r.db.QueryRow(ctx, getMessageQuery, mid[:]).Scan(&root, &reply, &s.reaction)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("reading MIMI message %s: %w", mid, err)
	}
	if s.root, err = content.MessageIDFromBytes(root); err != nil {
		return nil, err
	}
	if reply != nil {
		irt, err := content.MessageIDFromBytes(reply)
		if err != nil {
			return nil, err
		}
		s.inReplyTo = &irt
	}
	return s, nil
}

// rootOf is the message an edit chain started from: Matrix edits point at it.
func (r *Rooms) rootOf(ctx context.Context, mid content.MessageID) content.MessageID {
	if s, err := r.message(ctx, mid); err == nil && s != nil {
		return s.root
	}
	return mid
}

// putMessage records a message that crossed.
func (r *Rooms) putMessage(ctx context.Context, room string, mid content.MessageID, m *content.Message, reaction bool) error {
	root := mid
	if m.Replaces != nil {
		root = r.rootOf(ctx, *m.Replaces)
	}
	var reply []byte
	if m.InReplyTo != nil {
		reply = m.InReplyTo[:]
	}
	if _, err := r.db.Exec(ctx, putMessageQuery, mid[:], room, root[:], reply, reaction); err != nil {
		return fmt.Errorf("recording MIMI message %s: %w", mid, err)
	}
	return nil
}

// SendRoomEvent sends a message event as one of our users: m.room.message (text, formatted text, replies, edits,
// mentions), m.reaction and m.room.redaction become MIMI content; anything else is ErrUnsupported.
func (r *Rooms) SendRoomEvent(ctx context.Context, req *remote.SendRequest) (remote.EventID, error) {
	room, sender, err := roomAndUser(req.Room, req.Sender)
	if err != nil {
		return "", err
	}
	if req.StateKey != nil {
		return "", &remote.Mapped{Err: fmt.Errorf("MIMI rooms do not carry %s state", req.Type), Also: []error{remote.ErrUnsupported}}
	}
	var mid content.MessageID
	var enc []byte
	if req.Key != "" {
		var midb []byte
		var accepted bool
		err := r.db.QueryRow(ctx, getSendQuery, room, req.Key).Scan(&midb, &enc, &accepted)
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return "", fmt.Errorf("reading an earlier send: %w", err)
		default:
			if mid, err = content.MessageIDFromBytes(midb); err != nil {
				return "", err
			}
			if accepted {
				if req.With != nil {
					if err := r.db.DoTxn(ctx, nil, func(ctx context.Context) error { return req.With(ctx, EventIDOf(mid)) }); err != nil {
						return "", err
					}
				}
				return EventIDOf(mid), nil
			}
		}
	}
	if enc == nil {
		m, reaction, err := r.fromMatrix(ctx, room, sender, req)
		if err != nil {
			return "", err
		}
		if enc, err = m.Encode(); err != nil {
			return "", fmt.Errorf("encoding MIMI content: %w", err)
		}
		if mid, err = content.MessageIDWithSalt(idScheme, sender, room, enc, m.Salt); err != nil {
			return "", err
		}
		err = r.db.DoTxn(ctx, nil, func(ctx context.Context) error {
			if req.Key != "" {
				if _, err := r.db.Exec(ctx, insertSendQuery, room, req.Key, mid[:], enc); err != nil {
					return err
				}
			}
			return r.putMessage(ctx, room, mid, m, reaction)
		})
		if err != nil {
			return "", fmt.Errorf("recording a MIMI send: %w", err)
		}
	}
	accepted, err := r.p.Send(ctx, room, sender, enc)
	if err != nil {
		return "", mapErr(err)
	}
	zerolog.Ctx(ctx).Debug().Str("mimi_room", room).Str("mimi_message_id", mid.String()).Str("type", req.Type).
		Time("hub_time", accepted).Msg("Sent MIMI message")
	// The hub has it: a crash before this commit sends the same bytes again, and receivers drop the repeat by its ID.
	err = r.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if req.Key != "" {
			if _, err := r.db.Exec(ctx, acceptSendQuery, room, req.Key); err != nil {
				return err
			}
		}
		if req.With != nil {
			return req.With(ctx, EventIDOf(mid))
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return EventIDOf(mid), nil
}

// fromMatrix maps the event to MIMI content; reaction says whether it is one.
func (r *Rooms) fromMatrix(ctx context.Context, room, sender string, req *remote.SendRequest) (*content.Message, bool, error) {
	raw, err := json.Marshal(req.Content)
	if err != nil {
		return nil, false, fmt.Errorf("encoding event content: %w", err)
	}
	salt, err := content.NewSalt(nil)
	if err != nil {
		return nil, false, err
	}
	opts := matrixcontent.FromMatrixOptions{Salt: salt, SenderURI: sender, RoomURI: room,
		Target: func(evID id.EventID) (matrixcontent.Target, bool) {
			mid, ok := MessageIDOf(string(evID))
			if !ok {
				return matrixcontent.Target{}, false
			}
			t := matrixcontent.Target{ID: mid}
			if s, err := r.message(ctx, mid); err == nil && s != nil {
				t.InReplyTo, t.Reaction = s.inReplyTo, s.reaction
			}
			return t, true
		},
		UserURI: func(u id.UserID) (string, bool) {
			uri, err := UserURI(remote.UserID(u))
			return uri, err == nil
		},
		Media: func(c *event.MessageEventContent) (*content.ExternalPart, error) { return r.sealMedia(ctx, c) },
	}
	var m *content.Message
	reaction := false
	switch req.Type {
	case event.EventMessage.Type:
		var c event.MessageEventContent
		if err = json.Unmarshal(raw, &c); err == nil {
			m, err = matrixcontent.MessageFromMatrix(&c, opts)
		}
	case event.EventReaction.Type:
		var c event.ReactionEventContent
		if err = json.Unmarshal(raw, &c); err == nil {
			m, err = matrixcontent.ReactionFromMatrix(&c, opts)
			reaction = true
		}
	case event.EventRedaction.Type:
		var c struct {
			Redacts id.EventID `json:"redacts"`
		}
		if err = json.Unmarshal(raw, &c); err == nil {
			m, err = matrixcontent.RedactionFromMatrix(c.Redacts, opts)
		}
	default:
		err = fmt.Errorf("%w: %s", matrixcontent.ErrUnsupportedEvent, req.Type)
	}
	var later *errMediaLater
	if errors.As(err, &later) {
		return nil, false, fmt.Errorf("mapping %s to MIMI: %w", req.Type, err)
	} else if err != nil {
		return nil, false, &remote.Mapped{Err: fmt.Errorf("mapping %s to MIMI: %w", req.Type, err), Also: []error{remote.ErrUnsupported}}
	}
	return m, reaction, nil
}
