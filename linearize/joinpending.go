package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/outbox"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// recordJoin keeps the LPDU about to go to send_join, so that a crash before the answer resends it.
func (e *Engine) recordJoin(ctx context.Context, roomID, userID, version string, lpdu json.RawMessage) error {
	return e.store.PutJoin(ctx, &store.Join{RoomID: roomID, UserID: userID, RoomVersion: version, LPDU: lpdu}, e.now().UnixMilli())
}

// abandonJoining undoes a join that failed: its record, the PDUs kept for it and the joining marker go together.
func (e *Engine) abandonJoining(ctx context.Context, roomID string) error {
	err := e.store.Write(context.WithoutCancel(ctx), func(ctx context.Context) error {
		if err := e.store.DeleteJoin(ctx, roomID); err != nil {
			return err
		}
		if err := e.store.DropPending(ctx, roomID); err != nil {
			return err
		}
		return e.store.AbandonJoin(ctx, roomID)
	})
	if err != nil {
		return fmt.Errorf("failed to abandon the join of %s: %w", roomID, err)
	}
	e.pendingRooms.Delete(roomID)
	return nil
}

// insertPending keeps PDUs that arrived while their room's join was in flight; call it inside the write transaction
// that records the /send answer, so that what is answered is kept.
func (e *Engine) insertPending(ctx context.Context, objs []*received) error {
	last := make(map[string]int64)
	now := e.now().UnixMilli()
	for _, r := range objs {
		roomID := r.room.RoomID
		seq, ok := last[roomID]
		if !ok {
			var err error
			if seq, err = e.store.LastPending(ctx, roomID); err != nil {
				return err
			}
		}
		raw, err := r.p.Canonical()
		if err != nil {
			return err
		}
		seq++
		last[roomID] = seq
		if err = e.store.PutPending(ctx, roomID, seq, r.id, raw, now); err != nil {
			return err
		}
	}
	return nil
}

// hasPending reports whether a room has kept PDUs not appended yet: later ones must wait behind them.
func (e *Engine) hasPending(roomID string) bool {
	_, ok := e.pendingRooms.Load(roomID)
	return ok
}

// applyPending appends, in arrival order, the PDUs kept for a room while its join was in flight, once the join is
// stored; they go through the same gap filling and checks as a /send arriving then would. Each page is appended and
// deleted in one database transaction, so a crash in between repeats nothing and loses nothing (Start applies what
// is left).
func (e *Engine) applyPending(ctx context.Context, roomID string) error {
	e.pendingApply.Lock()
	defer e.pendingApply.Unlock()
	for {
		room, err := e.store.GetRoom(ctx, roomID)
		if err != nil {
			return err
		} else if room == nil || room.Status != store.StatusActive {
			// Still joining (applied when the join is stored), or forgotten with its PDUs.
			return nil
		}
		objs, last, err := e.readPending(ctx, room)
		if err != nil {
			return err
		}
		if len(objs) == 0 {
			e.writeLock.Lock()
			// New ones are kept under writeLock: none can slip in between this check and the flag's removal.
			objs, _, err = e.readPending(ctx, room)
			if err == nil && len(objs) == 0 {
				e.pendingRooms.Delete(roomID)
			}
			e.writeLock.Unlock()
			if err != nil || len(objs) == 0 {
				return err
			}
			continue
		}
		if objs, err = e.fillGaps(ctx, room.HubServer, objs); err != nil {
			return err
		}
		if err = e.appendPending(ctx, room, objs, last); err != nil {
			return err
		}
	}
}

// readPending reads the next page of a room's kept PDUs, ready for fillGaps; last is the seq of the last one.
func (e *Engine) readPending(ctx context.Context, room *RoomInfo) ([]*received, int64, error) {
	kept, last, err := e.store.Pending(ctx, room.RoomID, outbox.MaxPDUsPerTxn)
	if err != nil {
		return nil, 0, err
	}
	var objs []*received
	for _, raw := range kept {
		// Verified when they arrived; kept in canonical form after verification (a redacted copy if its content hash
		// did not match).
		r := &received{raw: raw, room: room}
		if r.p, err = parseStored(r.raw); err == nil {
			r.id, err = eventID(r.p)
		}
		if err != nil {
			zerolog.Ctx(ctx).Err(err).Str("room_id", room.RoomID).Msg("Kept PDU is unreadable, dropping it")
			continue
		}
		objs = append(objs, r)
	}
	return objs, last, nil
}

// appendPending appends one page of kept PDUs and deletes it, in one database transaction.
func (e *Engine) appendPending(ctx context.Context, room *RoomInfo, objs []*received, last int64) error {
	e.writeLock.Lock()
	defer e.writeLock.Unlock()
	cached, err := e.loadRoom(ctx, room.RoomID)
	if err != nil {
		return err
	} else if cached == nil {
		return fmt.Errorf("%w %s", ErrUnknownRoom, room.RoomID)
	}
	rs := cached.clone()
	seen := make(map[string]bool)
	var items []appendItem
	for _, r := range objs {
		it, err := e.acceptFromHub(ctx, r, rs, seen)
		if err != nil {
			return err
		} else if it == nil {
			continue
		}
		if err = rs.apply(it.p, it.eventID, rs.headIdx+1); err != nil {
			return err
		}
		seen[it.eventID] = true
		items = append(items, *it)
	}
	err = e.commitBatch(ctx, batch{items: items, pre: func(ctx context.Context) error {
		return e.store.DeletePending(ctx, room.RoomID, last)
	}})
	if err != nil {
		delete(e.rooms, room.RoomID)
		return fmt.Errorf("failed to append the PDUs kept for %s: %w", room.RoomID, err)
	}
	return nil
}

// recoverJoins runs at start-up, before anything is received: a joining room whose join was recorded is resumed by
// Start; any other one (a crash before make_join answered) is undone. Rooms with kept PDUs are marked, so that new
// PDUs queue behind them.
func (e *Engine) recoverJoins(ctx context.Context) error {
	stored, err := e.store.Joins(ctx)
	if err != nil {
		return err
	}
	joins := make(map[string]*store.Join, len(stored))
	for _, j := range stored {
		joins[j.RoomID] = j
	}
	rooms, err := e.store.ListRooms(ctx)
	if err != nil {
		return err
	}
	for _, room := range rooms {
		if room.Status != store.StatusJoining {
			continue
		}
		if j := joins[room.RoomID]; j != nil && room.Role == RoleParticipant {
			e.resumable = append(e.resumable, j)
		} else if err = e.abandonJoining(ctx, room.RoomID); err != nil {
			return err
		}
	}
	pending, err := e.store.PendingRooms(ctx)
	if err != nil {
		return err
	}
	for _, roomID := range pending {
		e.pendingRooms.Store(roomID, struct{}{})
	}
	return nil
}

// resumeInterrupted is started by Start: the joins a crash interrupted are sent again, and the kept PDUs of rooms
// whose join was stored are appended.
func (e *Engine) resumeInterrupted(ctx context.Context) {
	for _, j := range e.resumable {
		e.background.Add(1)
		go func() {
			defer e.background.Done()
			e.resumeJoin(ctx, j)
		}()
	}
	e.resumable = nil
	e.pendingRooms.Range(func(key, _ any) bool {
		roomID := key.(string)
		e.background.Add(1)
		go func() {
			defer e.background.Done()
			if err := e.applyPending(ctx, roomID); err != nil && ctx.Err() == nil {
				zerolog.Ctx(ctx).Err(err).Str("room_id", roomID).Msg("Failed to append the PDUs kept during a join")
			}
		}()
		return true
	})
}

// maxResumeWait caps the wait between two attempts to resend an interrupted join.
const maxResumeWait = 5 * time.Minute

// resumeJoin resends the LPDU of a join a crash interrupted, until the hub answers: the hub may have appended the
// join and be sending us the room already (kept meanwhile), and it answers a repeated LPDU without appending it
// again. A refusal undoes the join, as a refused join does; a new Join of the room takes over from it.
func (e *Engine) resumeJoin(ctx context.Context, j *store.Join) {
	log := zerolog.Ctx(ctx).With().Str("room_id", j.RoomID).Str("user_id", j.UserID).Logger()
	wait := time.Second
	for {
		done, err := e.resumeJoinOnce(ctx, j)
		if done {
			if err != nil {
				log.Err(err).Msg("Interrupted join failed")
			} else {
				log.Info().Msg("Interrupted join completed")
			}
			return
		}
		log.Warn().Err(err).Dur("retry_in", wait).Msg("Failed to resume interrupted join")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, maxResumeWait)
	}
}

// resumeJoinOnce makes one attempt; done means there is nothing more to try (completed, refused, or taken over).
func (e *Engine) resumeJoinOnce(ctx context.Context, j *store.Join) (bool, error) {
	e.joinLock.Lock()
	defer e.joinLock.Unlock()
	current, err := e.store.GetJoin(ctx, j.RoomID)
	if err != nil {
		return false, err
	} else if current == nil || string(current.LPDU) != string(j.LPDU) {
		return true, nil
	}
	room, err := e.store.GetRoom(ctx, j.RoomID)
	if err != nil {
		return false, err
	} else if room == nil || room.Status != store.StatusJoining {
		return true, nil
	}
	lpdu, err := parseStored(j.LPDU)
	if err != nil {
		return true, errors.Join(fmt.Errorf("stored join LPDU is unreadable: %w", err), e.abandonJoining(ctx, j.RoomID))
	}
	lpduID, err := eventID(lpdu)
	if err != nil {
		return true, errors.Join(err, e.abandonJoining(ctx, j.RoomID))
	}
	resp, err := e.remote.SendJoin(ctx, room.HubServer, lpduID, j.LPDU)
	if err != nil {
		if joinRefused(err) {
			return true, errors.Join(fmt.Errorf("hub refused the join: %w", err), e.abandonJoining(ctx, j.RoomID))
		}
		return false, fmt.Errorf("failed to send_join: %w", err)
	}
	info := &RoomInfo{RoomID: j.RoomID, RoomVersion: j.RoomVersion, HubServer: room.HubServer, Role: RoleParticipant,
		Status: store.StatusJoining}
	if _, err = e.storeJoin(ctx, info, lpdu, resp, false); err != nil {
		if errors.Is(err, ErrBadRemoteAnswer) {
			return true, errors.Join(err, e.abandonJoining(ctx, j.RoomID))
		}
		return false, err
	}
	return true, e.applyPending(ctx, j.RoomID)
}

// joinRefused reports whether a hub's answer to send_join says that asking again will not help: the join is
// forbidden, the room unknown or the LPDU unacceptable. Anything else (unreachable, 5xx, rate limited, our key not
// fetched yet) may pass later.
func joinRefused(err error) bool {
	var fe *federation.Error
	if !errors.As(err, &fe) {
		return false
	}
	switch fe.Status {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound:
		return true
	}
	return false
}
