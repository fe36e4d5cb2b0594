package linearize

import (
	"context"
	"fmt"

	"github.com/rs/zerolog"
)

// maxGapFill bounds how many events one gap fill fetches from the hub.
const maxGapFill = 1000

// fillGaps makes sure every PDU a hub sent us follows an event we hold: when one's prev event is unknown, the events
// between are backfilled from the hub, verified, and put in front of it in the transaction.
func (e *Engine) fillGaps(ctx context.Context, origin string, objs []*received) ([]*received, error) {
	known := make(map[string]bool)
	for i := 0; i < len(objs); i++ {
		r := objs[i]
		// Kept PDUs are gap-filled when applyPending appends them, against the log as it is then.
		if r.err != nil || r.drop || r.pending || r.room == nil || r.room.Role != RoleParticipant || len(r.p.PrevEvents) == 0 {
			continue
		}
		prev := r.p.PrevEvents[0]
		if head, ok := e.heads.Load(r.room.RoomID); ok && head.(string) == prev {
			known[r.id] = true
			continue
		}
		if known[prev] {
			known[r.id] = true
			continue
		}
		if dup, err := e.haveLogged(ctx, r.id); err != nil {
			return nil, err
		} else if dup {
			known[r.id] = true
			continue
		}
		ok, err := e.haveLogged(ctx, prev)
		if err != nil {
			return nil, err
		}
		if !ok {
			missing, err := e.backfillGap(ctx, origin, r.room.RoomID, prev)
			if err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Str("room_id", r.room.RoomID).Str("prev_event", prev).
					Msg("Failed to fill gap, appending anyway")
			}
			if len(missing) > 0 {
				objs = append(objs[:i:i], append(missing, objs[i:]...)...)
				for _, m := range missing {
					known[m.id] = true
				}
				i += len(missing)
				r = objs[i]
			}
		}
		known[r.id] = true
	}
	return objs, nil
}

func (e *Engine) haveLogged(ctx context.Context, eventID string) (bool, error) {
	ev, err := e.store.GetEvent(ctx, eventID)
	if err != nil {
		return false, err
	}
	return ev != nil && ev.Index > 0, nil
}

// backfillGap fetches events from the hub, newest first, until it reaches one we hold; it returns the missing ones
// oldest first, already verified.
func (e *Engine) backfillGap(ctx context.Context, hub, roomID, newest string) ([]*received, error) {
	var missing []*received
	want := newest
	for len(missing) < maxGapFill {
		resp, err := e.remote.Backfill(ctx, hub, roomID, []string{want}, 100)
		if err != nil {
			return nil, fmt.Errorf("failed to backfill %s: %w", roomID, err)
		}
		byID := make(map[string]*received, len(resp.PDUs))
		for _, raw := range resp.PDUs {
			r := e.precheck(ctx, hub, raw)
			if r.err != nil {
				return nil, fmt.Errorf("backfilled event refused: %w", r.err)
			}
			byID[r.id] = r
		}
		// Walk prev pointers from want: the order of the answer (oldest or newest first) does not matter.
		progressed := false
		for {
			r, ok := byID[want]
			if !ok {
				break
			}
			missing = append([]*received{r}, missing...)
			progressed = true
			if len(r.p.PrevEvents) == 0 {
				return missing, nil
			}
			want = r.p.PrevEvents[0]
			if ok, err := e.haveLogged(ctx, want); err != nil {
				return missing, err
			} else if ok {
				return missing, nil
			}
		}
		if !progressed {
			return missing, fmt.Errorf("hub's backfill did not contain %s", want)
		}
	}
	return missing, nil
}
