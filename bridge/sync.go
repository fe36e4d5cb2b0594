package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// SyncReport says what Sync changed.
type SyncReport struct {
	// StateToLM and StateToDAG count the state events re-sent to each side.
	StateToLM  int `json:"state_to_lm"`
	StateToDAG int `json:"state_to_dag"`
	// JoinedLM and LeftLM count Matrix users joined to or removed from the LM room; JoinedDAG and LeftDAG the ghosts
	// joined to or removed from the DAG room.
	JoinedLM  int `json:"joined_lm"`
	LeftLM    int `json:"left_lm"`
	JoinedDAG int `json:"joined_dag"`
	LeftDAG   int `json:"left_dag"`
}

// syncedState are the state events Sync compares; the power levels only where this bridge is the hub (as
// participant they are the hub's, merged with the DAG room's on the way in, and have no one value to compare).
var syncedState = []event.Type{event.StateJoinRules, event.StateHistoryVisibility, event.StateRoomName,
	event.StateTopic, event.StateRoomAvatar}

// Sync re-projects a linked room after the two sides drifted apart (an event lost to a bug, a change made behind the
// bridge's back). The state goes from the side that owns it to the other: from the DAG room to the LM room where this
// bridge is the hub (as at link time, power levels included), from the LM room to the DAG room where another server
// is. Members go both ways: Matrix users joined to the DAG room and not to the LM room join it, our LM users no longer
// in the DAG room leave it; ghosts of LM users joined to the LM room join the DAG room, ghosts of users who are not
// leave it. Failures are counted out of the report and logged; the first is returned with what was done.
func (br *Bridge) Sync(ctx context.Context, roomID id.RoomID) (*SyncReport, error) {
	link, err := br.linkByDAG(ctx, roomID)
	if err != nil {
		return nil, err
	} else if link == nil || link.Status != bridgedb.LinkActive {
		return nil, ErrNotLinked
	}
	pr := br.protoOf(link)
	log := zerolog.Ctx(ctx).With().Str("lm_room_id", link.LMRoomID).Stringer("dag_room_id", roomID).Logger()
	ctx = log.WithContext(ctx)
	dagState, err := br.matrix.StateEvents(ctx, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read the room's state: %w", err)
	}
	lmState, err := pr.rooms.RoomState(ctx, remote.RoomID(link.LMRoomID))
	if err != nil {
		return nil, fmt.Errorf("failed to read the LM room's state: %w", err)
	}
	rep := &SyncReport{}
	var firstErr error
	fail := func(err error, what string) {
		log.Warn().Err(err).Msg(what)
		if firstErr == nil {
			firstErr = fmt.Errorf("%s: %w", what, err)
		}
	}
	lmEntries := map[string]remote.StateEntry{}
	for _, entry := range lmState {
		lmEntries[entry.Type+"|"+entry.StateKey] = entry
	}
	br.syncState(ctx, link, dagState, lmEntries, rep, fail)
	br.syncMembers(ctx, link, dagState, lmEntries, rep, fail)
	log.Info().Interface("report", rep).Msg("Synced the room")
	return rep, firstErr
}

func (br *Bridge) syncState(ctx context.Context, link *bridgedb.Link, dagState []*event.Event, lmEntries map[string]remote.StateEntry,
	rep *SyncReport, fail func(error, string)) {
	pr := br.protoOf(link)
	lmContent := func(evtType string) Content {
		entry, ok := lmEntries[evtType+"|"]
		if !ok {
			return nil
		}
		stored, err := pr.rooms.RoomEvent(ctx, entry.EventID)
		if err != nil || stored == nil {
			return nil
		}
		c, _ := parseContent(stored.Content)
		return c
	}
	if link.Role == bridgedb.RoleHub {
		projected, err := br.projectState(ctx, pr, dagState)
		if err != nil {
			fail(err, "Failed to project the room's state")
			return
		}
		for _, st := range projected {
			if sameContent(st.Content, lmContent(st.Type)) {
				continue
			}
			empty := ""
			if _, err = pr.rooms.SendRoomEvent(ctx, &remote.SendRequest{Room: remote.RoomID(link.LMRoomID),
				Sender: remote.UserID(pr.botLM), Type: st.Type, StateKey: &empty, Content: st.Content}); err != nil {
				fail(err, "Failed to re-send "+st.Type+" to LM")
				continue
			}
			rep.StateToLM++
		}
		return
	}
	for _, evtType := range syncedState {
		entry, ok := lmEntries[evtType.Type+"|"]
		if !ok {
			continue
		}
		stored, err := pr.rooms.RoomEvent(ctx, entry.EventID)
		if err != nil || stored == nil {
			continue
		}
		content, err := parseContent(stored.Content)
		if err != nil {
			continue
		}
		if content, err = pr.tr.translateState(ctx, toDAG, evtType.Type, content, nil, nil); err != nil {
			fail(err, "Failed to translate "+evtType.Type)
			continue
		}
		var dagContent Content
		if evt := findState(dagState, evtType, ""); evt != nil {
			dagContent, _ = parseContent(evt.Content.VeryRaw)
		}
		if sameContent(content, dagContent) {
			continue
		}
		ghost, err := pr.users.GhostOf(stored.Sender)
		if err != nil {
			ghost = pr.users.BotUserID
		}
		if _, err = br.asGhostOrBot(ctx, ghost, func(sender id.UserID) (id.EventID, error) {
			return br.matrix.SendState(ctx, link.DAGRoomID, sender, evtType, "", content, time.Time{})
		}); err != nil {
			fail(err, "Failed to re-send "+evtType.Type+" to Matrix")
			continue
		}
		rep.StateToDAG++
	}
}

func (br *Bridge) syncMembers(ctx context.Context, link *bridgedb.Link, dagState []*event.Event, lmEntries map[string]remote.StateEntry,
	rep *SyncReport, fail func(error, string)) {
	pr := br.protoOf(link)
	lmJoined := func(user string) bool {
		entry, ok := lmEntries[event.StateMember.Type+"|"+user]
		return ok && entry.Membership == string(event.MembershipJoin)
	}
	dagJoined := map[id.UserID]bool{}
	for _, evt := range dagState {
		if evt.Type != event.StateMember || evt.StateKey == nil || membershipOf(evt) != event.MembershipJoin {
			continue
		}
		user := id.UserID(*evt.StateKey)
		dagJoined[user] = true
		if user == pr.users.BotUserID {
			continue
		}
		if lmUser, isGhost := pr.users.GhostLMUser(user); isGhost {
			if !lmJoined(lmUser) {
				if err := br.matrix.SetMembership(ctx, link.DAGRoomID, user, user, event.MembershipLeave, ""); err != nil {
					fail(err, "Failed to remove the ghost "+string(user))
					continue
				}
				rep.LeftDAG++
			}
			continue
		}
		userLM, err := pr.users.LMUserOf(user)
		if err != nil || lmJoined(userLM) {
			continue
		}
		content, _ := parseContent(evt.Content.VeryRaw)
		if _, err = br.joinLM(ctx, link, userLM, parseMember(userLM, userLM, content, nil), "sync:"+evt.ID.String()+":"+br.now().String()); err != nil {
			fail(err, "Failed to join "+string(user)+" to the LM room")
			continue
		}
		rep.JoinedLM++
	}
	for _, entry := range lmEntries {
		if entry.Type != event.StateMember.Type || entry.Membership != string(event.MembershipJoin) || entry.StateKey == pr.botLM {
			continue
		}
		if pr.users.IsOurLMUser(entry.StateKey) {
			user, err := pr.users.MatrixUserOf(entry.StateKey)
			if err != nil || dagJoined[user] {
				continue
			}
			req := &remote.MembershipRequest{Room: remote.RoomID(link.LMRoomID), Sender: remote.UserID(entry.StateKey),
				Target: remote.UserID(entry.StateKey), Membership: string(event.MembershipLeave), TS: br.now(),
				Via: remote.ServerName(link.HubServer)}
			if link.Role == bridgedb.RoleHub {
				_, err = pr.rooms.SetMembership(ctx, req)
			} else {
				_, err = pr.rooms.LeaveRoom(ctx, req)
			}
			if err != nil {
				fail(err, "Failed to remove "+entry.StateKey+" from the LM room")
				continue
			}
			rep.LeftLM++
			continue
		}
		ghost, err := pr.users.GhostOf(entry.StateKey)
		if err != nil || dagJoined[ghost] {
			continue
		}
		if stored, err := pr.rooms.RoomEvent(ctx, entry.EventID); err == nil && stored != nil {
			if p, err := parseStoredMember(stored); err == nil {
				if p.Displayname == "" {
					p.Displayname = entry.StateKey
				}
				_ = br.ensureGhostProfile(ctx, entry.StateKey, p.Displayname, p.AvatarURL)
			}
		}
		if err = br.matrix.SetMembership(ctx, link.DAGRoomID, ghost, ghost, event.MembershipJoin, ""); err != nil {
			fail(err, "Failed to join the ghost "+string(ghost))
			continue
		}
		rep.JoinedDAG++
	}
}

// sameContent compares two contents as JSON (Go's encoding sorts object keys, so equal maps encode alike).
func sameContent(a any, b Content) bool {
	if b == nil {
		return false
	}
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

func cmdSync(ce *commandEvent) {
	br := ce.Meta.br
	rep, err := br.Sync(ce.Ctx, ce.RoomID)
	if rep == nil {
		if errors.Is(err, ErrNotLinked) {
			br.reply(ce, "This room is not linked.")
			return
		}
		br.reply(ce, "Could not sync this room: %v", err)
		return
	}
	text := fmt.Sprintf("Synced with the LM room %s: %d state events re-sent to LM, %d to Matrix; %d Matrix users joined "+
		"and %d removed on LM; %d ghosts joined and %d removed here.", ce.Meta.link.LMRoomID, rep.StateToLM, rep.StateToDAG,
		rep.JoinedLM, rep.LeftLM, rep.JoinedDAG, rep.LeftDAG)
	if err != nil {
		text += " Not everything could be done: " + err.Error()
	}
	br.reply(ce, "%s", text)
}
