package bridge

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/event"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
)

// ErrNoMIMI means a MIMI command on a bridge without a MIMI provider (no mimi section in the config).
var ErrNoMIMI = errors.New("this bridge has no MIMI provider (the config has no mimi section)")

const mimiHelpText = `lmbridge MIMI commands:
• %[1]s mimi link: link this room to a new MIMI room on this bridge's provider (%[2]s), which is its hub
• %[1]s mimi join <MIMI room URI>: link this room to a MIMI room on another provider that you are in already (a
  member there added you; the bridge also opens a room for you when that happens)
• %[1]s mimi invite <MIMI user URI>: add a user of any MIMI provider to this room's MIMI room
• %[1]s status: as for LM rooms, with what waits for each follower provider`

// handleMIMICommand runs "!lm mimi …": handleCommand has checked the sender's permission and power.
func (br *Bridge) handleMIMICommand(ctx context.Context, evt *event.Event, link *bridgedb.Link, args []string,
	reply func(format string, a ...any)) {
	if br.mimi == nil {
		reply("%v", ErrNoMIMI)
		return
	}
	sub := "help"
	if len(args) > 0 {
		sub, args = strings.ToLower(args[0]), args[1:]
	}
	switch {
	case sub == "link" && len(args) == 0:
		l, err := br.linkAsHub(ctx, br.mimi, evt.RoomID, string(evt.Sender), nil)
		if err != nil {
			reply("Could not link this room: %v", err)
			return
		}
		reply("Linked this room to the MIMI room %s, hubbed by this bridge (%s).", mimiRoomURI(l.LMRoomID), l.HubServer)
	case sub == "join" && len(args) == 1:
		roomID, hub, err := seamRoomOf(args[0])
		if err != nil {
			reply("Could not link this room: %v", err)
			return
		}
		l, err := br.linkTo(ctx, br.mimi, evt.RoomID, roomID, hub, evt.Sender)
		if err != nil {
			reply("Could not link this room: %v", err)
			return
		}
		reply("Linked this room to the MIMI room %s, hubbed by %s.", mimiRoomURI(l.LMRoomID), l.HubServer)
	case sub == "invite" && len(args) == 1:
		if link == nil || link.Status != bridgedb.LinkActive || link.ProtocolOrLM() != bridgedb.ProtocolMIMI {
			reply("This room is not linked to a MIMI room.")
			return
		}
		user, err := seamUserOf(args[0])
		if err == nil {
			err = br.inviteLM(ctx, link, evt.Sender, user)
		}
		if err != nil {
			reply("Could not invite %s: %v", args[0], err)
			return
		}
		reply("Added %s to the MIMI room.", args[0])
	default:
		reply(mimiHelpText, br.cfg.CommandPrefix, br.mimi.rooms.Server())
	}
}

// MIMI identifiers cross the seam in Matrix form (see mimi/rooms): mimi://d/u/name is @name:d, mimi://hub/r/name is
// !name:hub. The commands take either form.
const mimiScheme = "mimi://"

// seamUserOf reads a MIMI user URI (or its Matrix form).
func seamUserOf(s string) (string, error) {
	if strings.HasPrefix(s, "@") {
		if _, _, err := splitUserID(s); err != nil {
			return "", err
		}
		return s, nil
	}
	domain, name, ok := splitMIMI(s, "u")
	if !ok {
		return "", fmt.Errorf("%w: %q is not a MIMI user URI (mimi://<domain>/u/<name>)", ErrInvalidUserID, s)
	}
	return "@" + name + ":" + domain, nil
}

// seamRoomOf reads a MIMI room URI (or its Matrix form) and returns its Matrix form and hub.
func seamRoomOf(s string) (roomID, hub string, err error) {
	if strings.HasPrefix(s, "!") {
		if _, hub, ok := strings.Cut(s[1:], ":"); ok && hub != "" {
			return s, hub, nil
		}
	} else if hub, name, ok := splitMIMI(s, "r"); ok {
		return "!" + name + ":" + hub, hub, nil
	}
	return "", "", fmt.Errorf("%w: %q is not a MIMI room URI (mimi://<hub>/r/<name>)", ErrInvalidLinkRequest, s)
}

func splitMIMI(s, kind string) (domain, name string, ok bool) {
	body, ok := strings.CutPrefix(s, mimiScheme)
	if !ok {
		return "", "", false
	}
	parts := strings.Split(body, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] != kind || parts[2] == "" || strings.ContainsAny(parts[2], ": ") {
		return "", "", false
	}
	return parts[0], parts[2], true
}

// mimiRoomURI is the MIMI URI of a room in Matrix form.
func mimiRoomURI(roomID string) string {
	name, hub, ok := strings.Cut(strings.TrimPrefix(roomID, "!"), ":")
	if !ok {
		return roomID
	}
	return mimiScheme + hub + "/r/" + name
}
