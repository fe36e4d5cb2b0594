package bridge

import (
	"context"
	"fmt"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// protocol is one remote protocol the bridge links rooms to: its rooms, how Matrix users are named in it (the user
// mapper with the protocol's server name), the bot's identity there and a translator with those names.
type protocol struct {
	name  string
	rooms remote.Rooms
	users *UserMapper
	botLM string
	tr    *translator
	// finalIDs says that a send's ID is final in rooms other servers order too (remote.FinalSends): no echo is waited
	// for, and the mapping is recorded with the event ID at once.
	finalIDs bool
}

func (br *Bridge) newProtocol(name string, rooms remote.Rooms, base *UserMapper) (*protocol, error) {
	users := base
	if string(rooms.Server()) != base.LMServerName {
		cp := *base
		cp.LMServerName = string(rooms.Server())
		users = &cp
	}
	bot, err := users.LMUserOf(users.BotUserID)
	if err != nil {
		return nil, fmt.Errorf("failed to map the bot to %s: %w", name, err)
	}
	pr := &protocol{name: name, rooms: rooms, users: users, botLM: bot, tr: &translator{users: users, ids: br}}
	if fs, ok := rooms.(remote.FinalSends); ok {
		pr.finalIDs = fs.SendIDsAreFinal()
	}
	return pr, nil
}

// protoOf is the protocol of a link (LM for links made before links had one).
func (br *Bridge) protoOf(link *bridgedb.Link) *protocol {
	if link != nil && link.ProtocolOrLM() == bridgedb.ProtocolMIMI && br.mimi != nil {
		return br.mimi
	}
	return br.lmProto
}

// sendIsLPDU says whether a send into the link's room is known by a provisional ID until the hub's echo.
func (pr *protocol) sendIsLPDU(link *bridgedb.Link) bool {
	return link.Role == bridgedb.RoleParticipant && !pr.finalIDs
}

// protoListener is the remote.Listener of a protocol other than LM (the Bridge itself is LM's).
type protoListener struct {
	br *Bridge
	pr *protocol
}

// MIMIListener is the listener to give the MIMI side (nil when the bridge has none).
func (br *Bridge) MIMIListener() remote.Listener {
	if br.mimi == nil {
		return nil
	}
	return &protoListener{br: br, pr: br.mimi}
}

func (l *protoListener) OnEvent(ctx context.Context, ev *remote.Event) error {
	return l.br.onEvent(ctx, l.pr, ev)
}

func (l *protoListener) OnInvite(ctx context.Context, inv *remote.Invite) error {
	return l.br.onInvite(ctx, l.pr, inv)
}

func (l *protoListener) OnLPDUFailed(ctx context.Context, roomID, lpduID, reason string) {
	l.br.OnLPDUFailed(ctx, roomID, lpduID, reason)
}
