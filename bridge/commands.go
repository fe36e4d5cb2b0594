package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// PermissionLevel is what bridge.permissions grants a user.
type PermissionLevel int

const (
	// PermissionNone may talk in linked rooms only.
	PermissionNone PermissionLevel = iota
	// PermissionRelay is the same as none for commands: it names users whose messages cross, which all do.
	PermissionRelay
	// PermissionUser may link, unlink and invite in rooms where they have the power to change state.
	PermissionUser
	// PermissionAdmin may do all of it anywhere the bot is.
	PermissionAdmin
)

func parsePermissionLevel(s string) PermissionLevel {
	switch strings.ToLower(s) {
	case "relay":
		return PermissionRelay
	case "user", "commands":
		return PermissionUser
	case "admin":
		return PermissionAdmin
	}
	return PermissionNone
}

func (l PermissionLevel) String() string {
	return [...]string{"none", "relay", "user", "admin"}[l]
}

// PermissionOf returns a user's level from bridge.permissions: the entry for the full user ID wins over the one for
// their server, which wins over "*".
func (br *Bridge) PermissionOf(user id.UserID) PermissionLevel {
	perms := br.cfg.Permissions
	if level, ok := perms[string(user)]; ok {
		return parsePermissionLevel(level)
	}
	if level, ok := perms[ServerOf(string(user))]; ok {
		return parsePermissionLevel(level)
	}
	if level, ok := perms["*"]; ok {
		return parsePermissionLevel(level)
	}
	return PermissionNone
}

// commandBody returns the body of a plain-text message that may be a command.
func commandBody(evt *event.Event) (string, bool) {
	if evt.Type != event.EventMessage || evt.StateKey != nil {
		return "", false
	}
	c := evt.Content.Raw
	if c == nil {
		var err error
		if c, err = parseContent(evt.Content.VeryRaw); err != nil {
			return "", false
		}
	}
	if mt, _ := c["msgtype"].(string); mt != string(event.MsgText) {
		return "", false
	}
	if _, edit := c["m.new_content"]; edit {
		return "", false
	}
	body, _ := c["body"].(string)
	return body, true
}

// commandArgs returns the arguments of a bot command, and false for anything that is not one.
func (br *Bridge) commandArgs(evt *event.Event) ([]string, bool) {
	body, ok := commandBody(evt)
	if !ok {
		return nil, false
	}
	return br.parseCommand(body)
}

// parseCommand splits "<prefix> <command> <args...>"; the prefix must be a word of its own.
func (br *Bridge) parseCommand(body string) ([]string, bool) {
	fields := strings.Fields(body)
	if len(fields) == 0 || fields[0] != br.cfg.CommandPrefix {
		return nil, false
	}
	return fields[1:], true
}

const helpText = `lmbridge commands:
• %[1]s link: link this room to a new LM room hosted by this bridge
• %[1]s link <LM room ID> via <hub server>: link this room to an existing LM room
• %[1]s invite <LM user ID>: invite an LM user (inviting their ghost does the same)
• %[1]s unlink: stop bridging this room
• %[1]s status: the link, its hub, the members on each side, what waits for the other LM servers and the last error
• %[1]s mimi …: the same for MIMI rooms (%[1]s mimi help)
• %[1]s help: this text`

// handleCommand runs a bot command and answers it in the room.
func (br *Bridge) handleCommand(ctx context.Context, evt *event.Event, link *bridgedb.Link, args []string) {
	log := zerolog.Ctx(ctx).With().Stringer("sender", evt.Sender).Strs("args", args).Logger()
	ctx = log.WithContext(ctx)
	reply := func(format string, a ...any) {
		text := fmt.Sprintf(format, a...)
		_, err := br.matrix.SendMessage(ctx, evt.RoomID, br.users.BotUserID, event.EventMessage,
			noticeContent(text, string(evt.ID), string(evt.Sender)), time.Time{}, "reply:"+string(evt.ID))
		if err != nil {
			log.Err(err).Msg("Failed to answer command")
		}
	}
	cmd := "help"
	if len(args) > 0 {
		cmd = strings.ToLower(args[0])
		args = args[1:]
	}
	if cmd == "help" {
		reply(helpText, br.cfg.CommandPrefix)
		return
	}
	level := br.PermissionOf(evt.Sender)
	if level < PermissionUser {
		log.Info().Str("command", cmd).Stringer("level", level).Msg("Refused command from user without permission")
		reply("You may not use the bridge's commands: bridge.permissions gives you %q, and they need \"user\" or \"admin\".", level.String())
		return
	}
	if cmd != "status" && level < PermissionAdmin {
		state, err := br.matrix.StateEvents(ctx, evt.RoomID)
		if err != nil {
			reply("Could not check your power in this room: %v", err)
			return
		}
		if ok, need, err := canChangeState(state, evt.Sender); err != nil {
			reply("Could not check your power in this room: %v", err)
			return
		} else if !ok {
			reply("You need power level %d (the level to change this room's state) to %s it.", need, cmd)
			return
		}
	}
	log.Info().Str("command", cmd).Msg("Running command")
	switch cmd {
	case "mimi":
		br.handleMIMICommand(ctx, evt, link, args, reply)
	case "link":
		switch {
		case len(args) == 0:
			l, err := br.LinkAsHub(ctx, evt.RoomID, string(evt.Sender))
			if err != nil {
				reply("Could not link this room: %v", err)
				return
			}
			reply("Linked this room to the LM room %s, hosted by this bridge (%s).", l.LMRoomID, l.HubServer)
		case len(args) == 3 && strings.EqualFold(args[1], "via"):
			l, err := br.LinkToLM(ctx, evt.RoomID, args[0], args[2], evt.Sender)
			if err != nil {
				// The provisioning API's message, which tells a blocked, unknown or refusing hub from a failing one.
				_, _, msg := linkErrorAnswer(err, args[2])
				reply("Could not link this room: %s", msg)
				return
			}
			reply("Linked this room to the LM room %s through its hub %s.", l.LMRoomID, l.HubServer)
		default:
			reply("Usage: %[1]s link, or %[1]s link <LM room ID> via <hub server>", br.cfg.CommandPrefix)
		}
	case "unlink":
		if _, err := br.Unlink(ctx, evt.RoomID); err != nil {
			reply("Could not unlink this room: %v", err)
			return
		}
		reply("This room is no longer bridged.")
	case "invite":
		if len(args) != 1 {
			reply("Usage: %s invite <LM user ID>", br.cfg.CommandPrefix)
			return
		}
		if link == nil || link.Status != bridgedb.LinkActive {
			reply("This room is not linked.")
			return
		}
		if err := br.inviteLM(ctx, link, evt.Sender, args[0]); err != nil {
			reply("Could not invite %s: %v", args[0], err)
			return
		}
		reply("Invited %s to the LM room.", args[0])
	case "status":
		st, err := br.Status(ctx, evt.RoomID)
		if errors.Is(err, ErrNotLinked) {
			reply("This room is not linked.")
			return
		} else if err != nil {
			reply("Could not read the link: %v", err)
			return
		}
		lastErr := "none"
		if st.LastError != "" {
			lastErr = st.LastError + " (" + st.LastErrorAt.UTC().Format(time.RFC3339) + ")"
		}
		reply("Linked to %s, hub %s (this bridge is %s, link %s).\nMatrix members (%d): %s\nLM members (%d): %s\nDelivery: %s\nLast error: %s",
			st.LMRoomID, st.HubServer, st.Role, st.Link.Status, len(st.DAGMembers), joinIDs(st.DAGMembers),
			len(st.LMMembers), strings.Join(st.LMMembers, ", "), describeDeliveries(st.Deliveries), lastErr)
	default:
		reply("Unknown command %q; %s help lists them.", cmd, br.cfg.CommandPrefix)
	}
}

// describeDeliveries says, per other LM server, whether everything reached it, or what waits and why.
func describeDeliveries(ds []remote.Delivery) string {
	if len(ds) == 0 {
		return "no other LM server in the room"
	}
	parts := make([]string, len(ds))
	for i, d := range ds {
		switch {
		case d.Queued == 0 && d.RetryCount == 0:
			parts[i] = string(d.Server) + " up to date"
		case d.RetryCount == 0:
			parts[i] = fmt.Sprintf("%s %d queued", d.Server, d.Queued)
		default:
			parts[i] = fmt.Sprintf("%s %d queued, %d failed attempts, next at %s: %s", d.Server, d.Queued,
				d.RetryCount, d.NextAttempt.UTC().Format(time.RFC3339), d.LastError)
		}
	}
	return strings.Join(parts, "; ")
}

func joinIDs(ids []id.UserID) string {
	s := make([]string, len(ids))
	for i, u := range ids {
		s[i] = string(u)
	}
	return strings.Join(s, ", ")
}

// inviteLM invites an LM user to the LM room of a link as the Matrix user who asked.
func (br *Bridge) inviteLM(ctx context.Context, link *bridgedb.Link, by id.UserID, target string) error {
	if _, _, err := splitUserID(target); err != nil {
		return err
	}
	pr := br.protoOf(link)
	if pr.users.IsOurLMUser(target) {
		return fmt.Errorf("%w: %s is a Matrix user seen from %s; invite them on Matrix", ErrInvalidUserID, target, pr.name)
	}
	byLM, err := pr.users.LMUserOf(by)
	if err != nil {
		return err
	}
	_, err = pr.rooms.InviteToRoom(ctx, &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(byLM),
		Target: remote.UserID(target)})
	return err
}
