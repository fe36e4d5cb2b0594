package bridge

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/remote"
)

// backfillGates holds, per LM room whose history is being brought in (LM room ID → chan struct{}), a channel closed
// when it is done: the room's live events wait for it, so that the Matrix room gets the history before what followed.
type backfillGates struct{ m sync.Map }

func (g *backfillGates) open(lmRoomID string) func() {
	ch := make(chan struct{})
	g.m.Store(lmRoomID, ch)
	return func() {
		g.m.CompareAndDelete(lmRoomID, ch)
		close(ch)
	}
}

// waitBackfill holds an LM room's live event until the room's backfill is done.
func (br *Bridge) waitBackfill(ctx context.Context, lmRoomID string) error {
	ch, ok := br.backfilling.m.Load(lmRoomID)
	if !ok {
		return nil
	}
	select {
	case <-ch.(chan struct{}):
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// backfillFetchFactor is how many events of history are read per message wanted: the history also holds state and
// membership, which are not backfilled (the link projects the current state and members instead).
const backfillFetchFactor = 4

// backfill brings the latest bridge.backfill_limit messages an LM room held before we joined it into the DAG room of
// a new link, in order, each sent by its sender's ghost with its original timestamp. Each LM event is processed once
// (bridge_processed, as for live events), so a re-link or a restart doubles nothing. Ghosts that joined only to send
// history and whose users are no longer in the LM room leave again. A failure is the link's last error; the link
// stands.
func (br *Bridge) backfill(ctx context.Context, link *bridgedb.Link) {
	limit := br.cfg.BackfillLimit
	pr := br.protoOf(link)
	reader, ok := pr.rooms.(remote.HistoryReader)
	if limit <= 0 || !ok {
		return
	}
	log := zerolog.Ctx(ctx).With().Str("lm_room_id", link.LMRoomID).Stringer("dag_room_id", link.DAGRoomID).Logger()
	ctx = log.WithContext(ctx)
	history, err := reader.RoomHistory(ctx, remote.RoomID(link.LMRoomID), limit*backfillFetchFactor)
	if err != nil {
		log.Warn().Err(err).Msg("Failed to read the LM room's history")
		_ = br.db.SetLinkError(ctx, link.DAGRoomID, fmt.Sprintf("failed to backfill: %v", err), br.now())
		return
	}
	var msgs []*remote.Event
	for _, ev := range history {
		if ev.StateKey == nil && ev.Type != event.EventRedaction.Type && len(ev.Content) > 2 && !br.users.IsOurLMUser(ev.Sender) {
			msgs = append(msgs, ev)
		}
	}
	if len(msgs) > limit {
		msgs = msgs[len(msgs)-limit:]
	}
	members := map[string]bool{}
	if state, err := pr.rooms.RoomState(ctx, remote.RoomID(link.LMRoomID)); err == nil {
		for _, entry := range state {
			if entry.Type == event.StateMember.Type && entry.Membership == string(event.MembershipJoin) {
				members[entry.StateKey] = true
			}
		}
	}
	senders := map[string]bool{}
	bridged := 0
	for _, ev := range msgs {
		if outcome, err := br.db.Processed(ctx, bridgedb.OriginLM, ev.EventID); err != nil {
			log.Warn().Err(err).Msg("Failed to check a backfilled event")
			return
		} else if outcome != "" {
			continue
		}
		dagID, err := br.handleLM(ctx, pr, ev, link)
		outcome := bridgedb.OutcomeBridged
		switch {
		case errors.Is(err, errSkip):
			outcome = bridgedb.OutcomeSkipped
		case err != nil && isPermanent(err):
			outcome = bridgedb.OutcomeFailed
			log.Warn().Err(err).Str("lm_event_id", ev.EventID).Msg("Backfilled event not bridged")
		case err != nil:
			log.Warn().Err(err).Str("lm_event_id", ev.EventID).Msg("Backfill stopped")
			_ = br.db.SetLinkError(ctx, link.DAGRoomID, fmt.Sprintf("backfill stopped: %v", err), br.now())
			return
		}
		if err = br.recordLM(ctx, link, ev, dagID, outcome); err != nil {
			log.Warn().Err(err).Msg("Failed to record a backfilled event")
			return
		}
		senders[ev.Sender] = true
		if dagID != "" {
			bridged++
		}
	}
	for sender := range senders {
		if members[sender] {
			continue
		}
		if ghost, err := br.users.GhostOf(sender); err == nil {
			if err = br.matrix.SetMembership(ctx, link.DAGRoomID, ghost, ghost, event.MembershipLeave, ""); err != nil {
				log.Debug().Err(err).Stringer("ghost", ghost).Msg("Ghost of a former member could not leave after backfill")
			}
		}
	}
	log.Info().Int("history", len(history)).Int("bridged", bridged).Msg("Backfilled the LM room's history")
}
