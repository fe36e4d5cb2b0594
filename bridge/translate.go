package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// maxEventBytes is the size cap of an event on both sides (LM §4, Matrix's 65536-byte PDU limit).
const maxEventBytes = 65536

// eventEnvelopeBytes is what an event adds around its content once complete: IDs, hashes, signatures, auth and prev
// events. Counting it before sending keeps us from appending an event the other servers would refuse.
const eventEnvelopeBytes = 1024

var (
	// ErrUnsupportedType means the event's type has no counterpart on the other side.
	ErrUnsupportedType = errors.New("its type is not supported by the bridge")
	// ErrTooLarge means the event would exceed the 65536-byte event size limit once re-originated.
	ErrTooLarge = errors.New("it is too large")
	// ErrUnknownTarget means the event refers to an event that did not cross, so the reference cannot be rewritten.
	ErrUnknownTarget = errors.New("it refers to an event that was not bridged")
	// ErrEncrypted means the event is encrypted; bridging encrypted rooms needs membership in the encryption group.
	ErrEncrypted = errors.New("it is encrypted, and the bridge cannot read encrypted rooms")
)

// eventIDMap resolves event IDs across the link; "" means not bridged.
type eventIDMap interface {
	LMEventOf(ctx context.Context, dagEventID id.EventID) (string, error)
	DAGEventOf(ctx context.Context, lmEventID string) (id.EventID, error)
}

// Content is an event's content as a generic JSON object, which keeps every field neither side knows about.
type Content = map[string]any

// translator rewrites content from one side's identifiers to the other's.
type translator struct {
	users *UserMapper
	ids   eventIDMap
}

// direction is which way a translation goes.
type direction int

const (
	toLM direction = iota
	toDAG
)

func (t *translator) mapUser(dir direction, userID string) (string, error) {
	if dir == toLM {
		return t.users.LMUserOf(id.UserID(userID))
	}
	mxid, err := t.users.MatrixSideOf(userID)
	return string(mxid), err
}

func (t *translator) mapEvent(ctx context.Context, dir direction, eventID string) (string, error) {
	if dir == toLM {
		return t.ids.LMEventOf(ctx, id.EventID(eventID))
	}
	mapped, err := t.ids.DAGEventOf(ctx, eventID)
	return string(mapped), err
}

// parseContent decodes raw content into a fresh map that the translation may change.
func parseContent(raw json.RawMessage) (Content, error) {
	if len(raw) == 0 {
		return Content{}, nil
	}
	var c Content
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("failed to decode content: %w", err)
	}
	if c == nil {
		c = Content{}
	}
	return c, nil
}

// checkSize refuses content that would not fit in an event on the other side.
func checkSize(c Content) error {
	data, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("failed to encode content: %w", err)
	}
	if len(data)+eventEnvelopeBytes > maxEventBytes {
		return fmt.Errorf("%w (%d bytes of content, the limit is %d for the whole event)", ErrTooLarge, len(data), maxEventBytes)
	}
	return nil
}

// messageTypes are the message event types that cross; everything in them is carried, with IDs rewritten.
var messageTypes = map[string]bool{
	event.EventMessage.Type:   true,
	event.EventSticker.Type:   true,
	event.EventReaction.Type:  true,
	event.EventRedaction.Type: true,
}

// stateTypes are the state event types that cross (membership has its own path).
var stateTypes = map[string]bool{
	event.StateRoomName.Type:          true,
	event.StateTopic.Type:             true,
	event.StateRoomAvatar.Type:        true,
	event.StateJoinRules.Type:         true,
	event.StateHistoryVisibility.Type: true,
	event.StatePowerLevels.Type:       true,
	event.StatePinnedEvents.Type:      true,
}

// localStateTypes belong to one side only and are left where they are without a word: addressing, the other
// room's version and encryption, server ACLs, spaces, the bridge's own markers, 3PID invites (LM has none).
var localStateTypes = map[string]bool{
	event.StateCreate.Type:           true,
	event.StateCanonicalAlias.Type:   true,
	"m.room.aliases":                 true,
	event.StateGuestAccess.Type:      true,
	event.StateServerACL.Type:        true,
	event.StateTombstone.Type:        true,
	event.StateThirdPartyInvite.Type: true,
	event.StateSpaceChild.Type:       true,
	event.StateSpaceParent.Type:      true,
	event.StateHalfShotBridge.Type:   true,
	event.StateBridge.Type:           true,
	"im.vector.modular.widgets":      true,
	"io.element.widgets.layout":      true,
}

// classify says whether an event of this type crosses: nil if it does, ErrEncrypted or ErrUnsupportedType if the
// sender should be told it did not, errSkip if it stays on its side without a word.
func classify(evtType string, isState bool) error {
	switch {
	case evtType == event.EventEncrypted.Type || evtType == event.StateEncryption.Type:
		return ErrEncrypted
	case isState && evtType == event.StateMember.Type:
		return nil
	case isState && stateTypes[evtType], !isState && messageTypes[evtType]:
		return nil
	case isState && localStateTypes[evtType]:
		return errSkip
	case strings.HasPrefix(evtType, "m.call.") || strings.HasPrefix(evtType, "org.matrix.msc3401."),
		strings.HasPrefix(evtType, "m.key.verification."):
		// Calls and verification are between devices of one network; telling the sender would be noise.
		return errSkip
	}
	return fmt.Errorf("%w (%s)", ErrUnsupportedType, evtType)
}

// errSkip marks an event that stays on its side by design.
var errSkip = errors.New("event stays on its side")

// rewriteRelations rewrites every event ID and user ID inside message content: m.relates_to (replies, edits,
// reactions, threads, references), m.new_content, the redaction target, and m.mentions. A reply to an event that did
// not cross loses its reply relation (the fallback text stays); any other relation to such an event fails.
func (t *translator) rewriteRelations(ctx context.Context, dir direction, c Content) error {
	if rel, ok := c["m.relates_to"].(map[string]any); ok {
		if err := t.rewriteRelatesTo(ctx, dir, rel); err != nil {
			return err
		}
		if len(rel) == 0 {
			delete(c, "m.relates_to")
		}
	}
	if newContent, ok := c["m.new_content"].(map[string]any); ok {
		if err := t.rewriteRelations(ctx, dir, newContent); err != nil {
			return err
		}
	}
	if target, ok := c["redacts"].(string); ok && target != "" {
		mapped, err := t.mapEvent(ctx, dir, target)
		if err != nil {
			return err
		} else if mapped == "" {
			return fmt.Errorf("%w (redaction of %s)", ErrUnknownTarget, target)
		}
		c["redacts"] = mapped
	}
	return t.rewriteMentions(dir, c)
}

func (t *translator) rewriteRelatesTo(ctx context.Context, dir direction, rel map[string]any) error {
	if reply, ok := rel["m.in_reply_to"].(map[string]any); ok {
		target, _ := reply["event_id"].(string)
		mapped, err := t.mapEvent(ctx, dir, target)
		if err != nil {
			return err
		}
		if mapped == "" {
			delete(rel, "m.in_reply_to")
			delete(rel, "is_falling_back")
		} else {
			reply["event_id"] = mapped
		}
	}
	if target, ok := rel["event_id"].(string); ok {
		mapped, err := t.mapEvent(ctx, dir, target)
		if err != nil {
			return err
		} else if mapped == "" {
			relType, _ := rel["rel_type"].(string)
			return fmt.Errorf("%w (%s of %s)", ErrUnknownTarget, relType, target)
		}
		rel["event_id"] = mapped
	}
	return nil
}

// rewriteMentions maps m.mentions.user_ids and the matrix.to pills of those users in formatted_body.
func (t *translator) rewriteMentions(dir direction, c Content) error {
	mentions, ok := c["m.mentions"].(map[string]any)
	if !ok {
		return nil
	}
	list, ok := mentions["user_ids"].([]any)
	if !ok {
		return nil
	}
	formatted, hasFormatted := c["formatted_body"].(string)
	out := make([]any, 0, len(list))
	for _, u := range list {
		userID, ok := u.(string)
		if !ok {
			continue
		}
		mapped, err := t.mapUser(dir, userID)
		if err != nil {
			// A mention of someone the bridge cannot name on the other side is dropped, not the message.
			continue
		}
		out = append(out, mapped)
		if hasFormatted {
			formatted = strings.ReplaceAll(formatted, "matrix.to/#/"+userID, "matrix.to/#/"+mapped)
			formatted = strings.ReplaceAll(formatted, "matrix.to/#/"+url.PathEscape(userID), "matrix.to/#/"+url.PathEscape(mapped))
		}
	}
	mentions["user_ids"] = out
	if hasFormatted {
		c["formatted_body"] = formatted
	}
	return nil
}

// translateMessage rewrites a message event's content (message, sticker, reaction, redaction) for the other side.
// Media URLs are the MediaMapper's (mediaToLM, mediaToDAG).
func (t *translator) translateMessage(ctx context.Context, dir direction, c Content) (Content, error) {
	if err := t.rewriteRelations(ctx, dir, c); err != nil {
		return nil, err
	}
	if err := checkSize(c); err != nil {
		return nil, err
	}
	return c, nil
}

// roomCreators returns the users with unlimited power in a room version 12 DAG room (the create event's sender and
// additional_creators), or nil for older versions.
func roomCreators(create *event.Event) []id.UserID {
	if create == nil {
		return nil
	}
	var cc event.CreateEventContent
	if err := json.Unmarshal(create.Content.VeryRaw, &cc); err != nil {
		return nil
	}
	if !cc.SupportsCreatorPower() {
		return nil
	}
	return append([]id.UserID{create.Sender}, cc.AdditionalCreators...)
}

// creatorLevel is the finite stand-in on LM for a room version 12 creator's unlimited power.
const creatorLevel = 100

// translateState rewrites a state event's content for the other side. For power levels toDAG, dagCurrent is the DAG
// room's current power levels content (nil if none) and creators the DAG room's v12 creators, who must not be listed.
// For power levels toLM, creators get creatorLevel.
func (t *translator) translateState(ctx context.Context, dir direction, evtType string, c Content, creators []id.UserID, dagCurrent Content) (Content, error) {
	switch evtType {
	case event.StateJoinRules.Type:
		rule, _ := c["join_rule"].(string)
		if dir == toLM && (rule == string(event.JoinRuleRestricted) || rule == string(event.JoinRuleKnockRestricted)) {
			// LM has no room-membership conditions: the closest rule that lets no one in by surprise is invite.
			c = Content{"join_rule": string(event.JoinRuleInvite)}
		}
	case event.StatePowerLevels.Type:
		var err error
		if c, err = t.translatePowerLevels(dir, c, creators, dagCurrent); err != nil {
			return nil, err
		}
	case event.StatePinnedEvents.Type:
		pinned, _ := c["pinned"].([]any)
		out := make([]any, 0, len(pinned))
		for _, p := range pinned {
			s, _ := p.(string)
			mapped, err := t.mapEvent(ctx, dir, s)
			if err != nil {
				return nil, err
			} else if mapped != "" {
				out = append(out, mapped)
			}
		}
		c["pinned"] = out
	}
	if err := checkSize(c); err != nil {
		return nil, err
	}
	return c, nil
}

func (t *translator) translatePowerLevels(dir direction, c Content, creators []id.UserID, dagCurrent Content) (Content, error) {
	users, _ := c["users"].(map[string]any)
	mapped := make(map[string]any, len(users)+len(creators))
	botLM, _ := t.users.LMUserOf(t.users.BotUserID)
	for userID, level := range users {
		if dir == toDAG && userID == botLM {
			// The bot's LM identity holds 100 in the rooms we host so that the bridge can act there; that says
			// nothing about the bot's power in the DAG room, which the DAG room's admins decide.
			continue
		}
		other, err := t.mapUser(dir, userID)
		if err != nil {
			// A power level for a user the other side cannot name (a Matrix user of another homeserver, an
			// unparsable ID) has no holder there.
			continue
		}
		mapped[other] = level
	}
	if dir == toLM {
		for _, creator := range creators {
			if lmUser, err := t.users.LMUserOf(creator); err == nil {
				mapped[lmUser] = creatorLevel
			}
		}
		c["users"] = mapped
		return c, nil
	}
	// Towards the DAG room, LM's levels are laid over the DAG room's own: a user the LM event does not name keeps
	// their level, so that another provider's hub cannot strip the DAG room's admins, and v12 creators, whose power
	// the DAG room does not list, stay unlisted.
	out := Content{}
	for k, v := range dagCurrent {
		out[k] = v
	}
	for k, v := range c {
		if k != "users" {
			out[k] = v
		}
	}
	merged := make(map[string]any)
	if dagUsers, ok := dagCurrent["users"].(map[string]any); ok {
		for k, v := range dagUsers {
			merged[k] = v
		}
	}
	for k, v := range mapped {
		merged[k] = v
	}
	for _, creator := range creators {
		delete(merged, string(creator))
	}
	out["users"] = merged
	return out, nil
}

// memberChange is a membership event in terms both sides share.
type memberChange struct {
	Sender, Target string
	Membership     event.Membership
	PrevMembership event.Membership
	Reason         string
	Displayname    string
	AvatarURL      string
}

// parseMember reads a membership event's content and previous membership.
func parseMember(sender, target string, c Content, prev Content) memberChange {
	mc := memberChange{Sender: sender, Target: target}
	s, _ := c["membership"].(string)
	mc.Membership = event.Membership(s)
	mc.Reason, _ = c["reason"].(string)
	mc.Displayname, _ = c["displayname"].(string)
	mc.AvatarURL, _ = c["avatar_url"].(string)
	if prev != nil {
		p, _ := prev["membership"].(string)
		mc.PrevMembership = event.Membership(p)
	}
	return mc
}

// isKnownMembership says whether a membership value is one both sides have.
func isKnownMembership(m event.Membership) bool {
	return slices.Contains([]event.Membership{event.MembershipJoin, event.MembershipLeave, event.MembershipInvite,
		event.MembershipBan, event.MembershipKnock}, m)
}

// jsonUnmarshalContent decodes an event's raw content into a typed struct.
func jsonUnmarshalContent(evt *event.Event, into any) error {
	if err := json.Unmarshal(evt.Content.VeryRaw, into); err != nil {
		return fmt.Errorf("failed to decode %s content: %w", evt.Type.Type, err)
	}
	return nil
}
