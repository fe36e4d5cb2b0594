package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/commands"
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
	// PermissionTalk is the same as none for commands: it names users whose messages cross, which all do. The
	// config's "talk"; it was called "relay", which in the mautrix bridges means something else (the relay bot
	// sending for users who have not logged in), and which the config still reads, with a warning.
	PermissionTalk
	// PermissionUser may link, unlink and invite in rooms where they have the power to change state.
	PermissionUser
	// PermissionAdmin may do all of it anywhere the bot is.
	PermissionAdmin
)

// PermissionRelay is PermissionTalk's old name.
//
// Deprecated: use PermissionTalk.
const PermissionRelay = PermissionTalk

func parsePermissionLevel(s string) PermissionLevel {
	switch strings.ToLower(s) {
	case "talk", "relay":
		return PermissionTalk
	case "user", "commands":
		return PermissionUser
	case "admin":
		return PermissionAdmin
	}
	return PermissionNone
}

func (l PermissionLevel) String() string {
	return [...]string{"none", "talk", "user", "admin"}[l]
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

// The commands run on mautrix's commands framework (maunium.net/go/mautrix/commands): each command is a
// commands.Handler in a commands.CommandContainer, found by name or alias, and gets a commands.Event built by
// commands.RawTextToEvent, with commandMeta (the bridge, the room's link, the sender's level) as its Meta.
//
// commands.Processor, the framework's entry point, is not used, for three reasons. It answers through a
// *mautrix.Client (Event.Reply calls Proc.Client.SendMessageEvent, and a panic is answered by a reaction through it),
// while the bridge sends as its bot through MatrixSide: that path encrypts in encrypted rooms, derives the
// transaction ID from the command's event ID so that a command handled again after a crash is not answered twice,
// and records the send for Dendrite's resend look-up; a bare client does none of it, and unit tests run on a fake
// MatrixSide. Its parser wants the event's content parsed into *event.MessageEventContent, where dagview hands the
// bridge raw content. And its prefix check (ValidatePrefixCommand) drops a bare "!lm", which has always answered
// with the help. So commandEvent.Reply and its siblings are never called here (they would dereference a nil
// Processor); reply, below, answers instead, and the unknown-command handler is ours for the same reason.

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

// commandMeta is what a command handler gets beside the event: the bridge, the room's link (nil when the room is not
// linked) and the sender's level.
type commandMeta struct {
	br    *Bridge
	link  *bridgedb.Link
	level PermissionLevel
}

type (
	commandEvent   = commands.Event[*commandMeta]
	commandHandler = commands.Handler[*commandMeta]
)

// commandAccess is who may run a command.
type commandAccess int

const (
	// accessAnyone: every sender, whatever bridge.permissions gives them.
	accessAnyone commandAccess = iota
	// accessUser: "user" or "admin" in bridge.permissions.
	accessUser
	// accessRoomPower: "admin", or "user" with the power to change the room's state.
	accessRoomPower
)

// botCommand is a command with its usage lines for the help and who may run it.
type botCommand struct {
	handler *commandHandler
	// usage are the help's lines for the command, "%[1]s" standing for the prefix.
	usage  []string
	access commandAccess
}

// botCommands lists the commands in the order the help shows them.
func botCommands() []*botCommand {
	return []*botCommand{
		{access: accessRoomPower, usage: []string{
			"%[1]s link: link this room to a new LM room hosted by this bridge",
			"%[1]s link <LM room ID> via <hub server>: link this room to an existing LM room"},
			handler: &commandHandler{Name: "link", Func: cmdLink}},
		{access: accessRoomPower, usage: []string{"%[1]s invite <LM user ID>: invite an LM user (inviting their ghost does the same)"},
			handler: &commandHandler{Name: "invite", Func: cmdInvite}},
		{access: accessRoomPower, usage: []string{"%[1]s unlink: stop bridging this room"},
			handler: &commandHandler{Name: "unlink", Func: cmdUnlink}},
		{access: accessUser, usage: []string{"%[1]s status: the link, its hub, the members on each side, what waits for the other LM servers and the last error"},
			handler: &commandHandler{Name: "status", Func: cmdStatus}},
		{access: accessRoomPower, usage: []string{"%[1]s sync: re-project this room's state and members onto the other side after they drifted apart"},
			handler: &commandHandler{Name: "sync", Func: cmdSync}},
		{access: accessUser, usage: []string{"%[1]s pm <LM user ID>: make a new room for a direct chat with an LM user (inviting their ghost into a new room does the same)"},
			handler: &commandHandler{Name: "pm", Aliases: []string{"dm"}, Func: cmdPM}},
		{access: accessUser, usage: []string{"%[1]s resolve <LM user ID>: whether the LM user's server answers, and their ghost here"},
			handler: &commandHandler{Name: "resolve", Func: cmdResolve}},
		{access: accessRoomPower, usage: []string{"%[1]s mimi …: the same for MIMI rooms (%[1]s mimi help)"},
			handler: &commandHandler{Name: "mimi", Func: cmdMIMI}},
		{access: accessAnyone, usage: []string{"%[1]s help: this text"},
			handler: &commandHandler{Name: "help", Func: cmdHelp}},
	}
}

// commandSet is the bridge's commands, registered in a commands.CommandContainer.
type commandSet struct {
	container *commands.CommandContainer[*commandMeta]
	list      []*botCommand
	access    map[*commandHandler]commandAccess
}

func newCommandSet() *commandSet {
	cs := &commandSet{container: commands.NewCommandContainer[*commandMeta](), list: botCommands(),
		access: map[*commandHandler]commandAccess{}}
	for _, c := range cs.list {
		c.handler.Description = event.MakeExtensibleText(strings.Join(c.usage, "\n"))
		cs.container.Register(c.handler)
		cs.access[c.handler] = c.access
	}
	unknown := &commandHandler{Name: commands.UnknownCommandName, Func: func(ce *commandEvent) {
		ce.Meta.br.reply(ce, "Unknown command %q; %s help lists them.", ce.Command, ce.Meta.br.cfg.CommandPrefix)
	}}
	cs.container.Register(unknown)
	cs.access[unknown] = accessAnyone
	return cs
}

// reply answers a command in its room as the bot, in reply to it and mentioning its sender.
func (br *Bridge) reply(ce *commandEvent, format string, a ...any) {
	text := fmt.Sprintf(format, a...)
	_, err := br.matrix.SendMessage(ce.Ctx, ce.RoomID, br.users.BotUserID, event.EventMessage,
		noticeContent(text, string(ce.ID), string(ce.Sender)), time.Time{}, "reply:"+string(ce.ID))
	if err != nil {
		ce.Log.Err(err).Msg("Failed to answer command")
	}
}

// handleCommand runs a bot command and answers it in the room.
func (br *Bridge) handleCommand(ctx context.Context, evt *event.Event, link *bridgedb.Link, args []string) {
	log := zerolog.Ctx(ctx).With().Stringer("sender", evt.Sender).Strs("args", args).Logger()
	ctx = log.WithContext(ctx)
	body, _ := commandBody(evt)
	// The prefix is parseCommand's to check (it is case-sensitive, the framework's check is not): the event the
	// framework gets starts at the command's name.
	rest := strings.TrimLeft(strings.TrimPrefix(strings.TrimLeft(body, " \t\n"), br.cfg.CommandPrefix), " \t\n")
	if len(args) == 0 {
		rest = "help"
	}
	ce := commands.RawTextToEvent[*commandMeta](ctx, evt, rest)
	ce.Log = &log
	ce.Meta = &commandMeta{br: br, link: link, level: br.PermissionOf(evt.Sender)}
	handler := br.commands.container.GetHandler(ce.Command)
	ce.Handler = handler
	if !br.mayRun(ce, br.commands.access[handler]) {
		return
	}
	log.Info().Str("command", ce.Command).Msg("Running command")
	handler.Func(ce)
}

// mayRun checks the sender's level and, for a command that changes the room's bridging, their power in the room; a
// refusal is answered.
func (br *Bridge) mayRun(ce *commandEvent, access commandAccess) bool {
	level := ce.Meta.level
	if access == accessAnyone {
		return true
	}
	if level < PermissionUser {
		ce.Log.Info().Str("command", ce.Command).Stringer("level", level).Msg("Refused command from user without permission")
		br.reply(ce, "You may not use the bridge's commands: bridge.permissions gives you %q, and they need \"user\" or \"admin\".", level.String())
		return false
	}
	if access == accessUser || level >= PermissionAdmin {
		return true
	}
	state, err := br.matrix.StateEvents(ce.Ctx, ce.RoomID)
	if err != nil {
		br.reply(ce, "Could not check your power in this room: %v", err)
		return false
	}
	if ok, need, err := canChangeState(state, ce.Sender); err != nil {
		br.reply(ce, "Could not check your power in this room: %v", err)
		return false
	} else if !ok {
		br.reply(ce, "You need power level %d (the level to change this room's state) to %s it.", need, ce.Command)
		return false
	}
	return true
}

func cmdHelp(ce *commandEvent) {
	br := ce.Meta.br
	lines := []string{"lmbridge commands:"}
	for _, c := range br.commands.list {
		for _, u := range c.usage {
			lines = append(lines, "• "+fmt.Sprintf(u, br.cfg.CommandPrefix))
		}
	}
	lines = append(lines, "", br.userIDHelp())
	br.reply(ce, "%s", strings.Join(lines, "\n"))
}

// userIDHelp explains how to write an LM user's ID, with this bridge's own names.
func (br *Bridge) userIDHelp() string {
	example := br.exampleLMUser()
	ghost, _ := br.users.GhostOf(example)
	alice := id.UserID("@alice:" + br.users.HomeserverDomain)
	aliceLM, _ := br.users.LMUserOf(alice)
	return fmt.Sprintf("An LM user's ID is written as on their own LM server, @<name>:<server>: bob on the LM server "+
		"remote.example is %[1]s, as in \"%[2]s pm %[1]s\" or \"%[2]s invite %[1]s\". Here he appears as his ghost, "+
		"%[3]s: inviting the ghost, or giving its ID to a command, is the same as giving his. Matrix users of %[4]s "+
		"appear on LM as users of this bridge's LM server %[5]s: %[6]s is %[7]s there.",
		example, br.cfg.CommandPrefix, ghost, br.users.HomeserverDomain, br.users.LMServerName, alice, aliceLM)
}

func cmdLink(ce *commandEvent) {
	br := ce.Meta.br
	switch args := ce.Args; {
	case len(args) == 0:
		l, err := br.LinkAsHub(ce.Ctx, ce.RoomID, string(ce.Sender))
		if err != nil {
			br.reply(ce, "Could not link this room: %v", err)
			return
		}
		br.reply(ce, "Linked this room to the LM room %s, hosted by this bridge (%s).", l.LMRoomID, l.HubServer)
	case len(args) == 3 && strings.EqualFold(args[1], "via"):
		l, err := br.LinkToLM(ce.Ctx, ce.RoomID, args[0], args[2], ce.Sender)
		if err != nil {
			// The provisioning API's message, which tells a blocked, unknown or refusing hub from a failing one.
			_, _, msg := linkErrorAnswer(err, args[2])
			br.reply(ce, "Could not link this room: %s", msg)
			return
		}
		br.reply(ce, "Linked this room to the LM room %s through its hub %s.", l.LMRoomID, l.HubServer)
	default:
		br.reply(ce, "Usage: %[1]s link, or %[1]s link <LM room ID> via <hub server>", br.cfg.CommandPrefix)
	}
}

func cmdUnlink(ce *commandEvent) {
	br := ce.Meta.br
	if _, err := br.Unlink(ce.Ctx, ce.RoomID); err != nil {
		br.reply(ce, "Could not unlink this room: %v", err)
		return
	}
	br.reply(ce, "This room is no longer bridged.")
}

// cmdMIMI runs the MIMI commands (mimicommands.go) with the command's room, sender and link.
func cmdMIMI(ce *commandEvent) {
	br := ce.Meta.br
	evt := &event.Event{ID: ce.ID, RoomID: ce.RoomID, Sender: ce.Sender}
	br.handleMIMICommand(ce.Ctx, evt, ce.Meta.link, ce.Args, func(format string, a ...any) { br.reply(ce, format, a...) })
}

func cmdInvite(ce *commandEvent) {
	br, link := ce.Meta.br, ce.Meta.link
	if len(ce.Args) != 1 {
		br.reply(ce, "Usage: %s invite <LM user ID>", br.cfg.CommandPrefix)
		return
	}
	if link == nil || link.Status != bridgedb.LinkActive {
		br.reply(ce, "This room is not linked.")
		return
	}
	if err := br.inviteLM(ce.Ctx, link, ce.Sender, ce.Args[0]); err != nil {
		br.reply(ce, "Could not invite %s: %v", ce.Args[0], err)
		return
	}
	br.reply(ce, "Invited %s to the LM room.", ce.Args[0])
}

func cmdStatus(ce *commandEvent) {
	br := ce.Meta.br
	st, err := br.Status(ce.Ctx, ce.RoomID)
	if errors.Is(err, ErrNotLinked) {
		br.reply(ce, "This room is not linked.")
		return
	} else if err != nil {
		br.reply(ce, "Could not read the link: %v", err)
		return
	}
	lastErr := "none"
	if st.LastError != "" {
		lastErr = st.LastError + " (" + st.LastErrorAt.UTC().Format(time.RFC3339) + ")"
	}
	br.reply(ce, "Linked to %s, hub %s (this bridge is %s, link %s).\nMatrix members (%d): %s\nLM members (%d): %s\nDelivery: %s\nLast error: %s",
		st.LMRoomID, st.HubServer, st.Role, st.Link.Status, len(st.DAGMembers), joinIDs(st.DAGMembers),
		len(st.LMMembers), strings.Join(st.LMMembers, ", "), describeDeliveries(st.Deliveries), lastErr)
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
