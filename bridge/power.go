package bridge

import (
	"errors"
	"fmt"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// ErrBotLacksPower means the bot's power level in the DAG room is below what the bridge does there as the bot.
var ErrBotLacksPower = errors.New("the bridge bot lacks power in the room")

// roomPowerLevels reads a DAG room's power levels from its state, with the v12 creators (whose power is unlimited).
// A room without power levels gets what the auth rules give it then: 100 for the creator, 0 for everyone else and 0
// for any event.
func roomPowerLevels(state []*event.Event) (*event.PowerLevelsEventContent, error) {
	pl := &event.PowerLevelsEventContent{}
	create := findState(state, event.StateCreate, "")
	if evt := findState(state, event.StatePowerLevels, ""); evt != nil {
		if err := jsonUnmarshalContent(evt, pl); err != nil {
			return nil, fmt.Errorf("failed to read the room's power levels: %w", err)
		}
	} else {
		zero := 0
		pl.StateDefaultPtr = &zero
		pl.Users = map[id.UserID]int{}
		if create != nil {
			pl.Users[create.Sender] = 100
		}
	}
	if create != nil {
		if create.Content.Parsed == nil {
			// mautrix reads v12 creators from the parsed create content.
			_ = create.Content.ParseRaw(event.StateCreate)
		}
		pl.CreateEvent = create
	}
	return pl, nil
}

// botNeed is something the bridge does in a linked DAG room as its bot, and the power level it takes there.
type botNeed struct {
	what  string
	level int
}

// botNeeds are what the bot does in a linked room: m.bridge at link and unlink, invites for the ghosts of LM users
// that cannot join by themselves, and, when an LM user's ghost lacks the power, that user's state changes, kicks,
// bans and redactions.
func botNeeds(pl *event.PowerLevelsEventContent) []botNeed {
	return []botNeed{
		{"set the room's m.bridge state", pl.GetEventLevel(bridgeStateType)},
		{"invite the ghosts of LM users", pl.Invite()},
		{"carry LM users' changes to the room's state", pl.StateDefault()},
		{"carry LM users' kicks", pl.Kick()},
		{"carry LM users' bans", pl.Ban()},
		{"carry LM users' redactions", pl.Redact()},
	}
}

// checkBotPower refuses a room where the bot lacks the power for something it does there, before anything of the
// link is made: a link whose m.bridge marker cannot be set, or whose LM users' moderation cannot cross, is one the
// room would only half have. The error says what the bot needs, and the one level that covers it all.
func (br *Bridge) checkBotPower(state []*event.Event, roomID id.RoomID) error {
	pl, err := roomPowerLevels(state)
	if err != nil {
		return err
	}
	bot := br.users.BotUserID
	have := pl.GetUserLevel(bot)
	var missing []string
	need := 0
	for _, n := range botNeeds(pl) {
		if have < n.level {
			missing = append(missing, fmt.Sprintf("%s (%d)", n.what, n.level))
			need = max(need, n.level)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s has power level %d in %s and needs %d to %s. Give %s power level %d, then link again",
		ErrBotLacksPower, bot, have, roomID, need, strings.Join(missing, ", "), bot, need)
}

// canChangeState says whether a user has the power to change the room's state: the level m.bridge needs.
func canChangeState(state []*event.Event, user id.UserID) (bool, int, error) {
	pl, err := roomPowerLevels(state)
	if err != nil {
		return false, 0, err
	}
	need := pl.GetEventLevel(bridgeStateType)
	return pl.GetUserLevel(user) >= need, need, nil
}
