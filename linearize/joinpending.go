package linearize

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

const (
	upsertJoinQuery = `
		INSERT INTO lm_join (room_id, user_id, lpdu, room_version, started_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id) DO UPDATE SET user_id=excluded.user_id, lpdu=excluded.lpdu, room_version=excluded.room_version
	`
	deleteJoinQuery    = `DELETE FROM lm_join WHERE room_id=$1`
	storedJoinsQuery   = `SELECT room_id, user_id, lpdu, room_version FROM lm_join`
	storedJoinQuery    = `SELECT room_id, user_id, lpdu, room_version FROM lm_join WHERE room_id=$1`
	lastPendingQuery   = `SELECT COALESCE(MAX(seq), 0) FROM lm_join_pending WHERE room_id=$1`
	insertPendingQuery = `
		INSERT INTO lm_join_pending (room_id, seq, event_id, pdu, received_at) VALUES ($1, $2, $3, $4, $5)
	`
	pendingQuery       = `SELECT seq, pdu FROM lm_join_pending WHERE room_id=$1 ORDER BY seq LIMIT $2`
	deletePendingQuery = `DELETE FROM lm_join_pending WHERE room_id=$1 AND seq<=$2`
	dropPendingQuery   = `DELETE FROM lm_join_pending WHERE room_id=$1`
	pendingRoomsQuery  = `SELECT DISTINCT room_id FROM lm_join_pending`
)

// storedJoin is a join whose send_join had not been answered when it was last written: lm_join.
type storedJoin struct {
	roomID, userID, roomVersion string
	lpdu                        json.RawMessage
}

func scanStoredJoin(row interface{ Scan(...any) error }) (*storedJoin, error) {
	var j storedJoin
	var lpdu string
	if err := row.Scan(&j.roomID, &j.userID, &lpdu, &j.roomVersion); err != nil {
		return nil, err
	}
	j.lpdu = json.RawMessage(lpdu)
	return &j, nil
}

// recordJoin keeps the LPDU about to go to send_join, so that a crash before the answer resends it.
func (e *Engine) recordJoin(ctx context.Context, roomID, userID, version string, lpdu json.RawMessage) error {
	if _, err := e.store.exec(ctx, upsertJoinQuery, roomID, userID, string(lpdu), version, e.now().UnixMilli()); err != nil {
		return fmt.Errorf("failed to record the join of %s to %s: %w", userID, roomID, err)
	}
	return nil
}

func (e *Engine) storedJoin(ctx context.Context, roomID string) (*storedJoin, error) {
	j, err := scanStoredJoin(e.db.QueryRow(ctx, storedJoinQuery, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to read the join in flight in %s: %w", roomID, err)
	}
	return j, nil
}

// abandonJoining undoes a join that failed: its record, the PDUs kept for it and the joining marker go together.
func (e *Engine) abandonJoining(ctx context.Context, roomID string) error {
	err := e.store.write(context.WithoutCancel(ctx), func(ctx context.Context) error {
		if _, err := e.store.exec(ctx, deleteJoinQuery, roomID); err != nil {
			return err
		}
		if _, err := e.store.exec(ctx, dropPendingQuery, roomID); err != nil {
			return err
		}
		return e.store.abandonJoin(ctx, roomID)
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
			if err := e.db.QueryRow(ctx, lastPendingQuery, roomID).Scan(&seq); err != nil {
				return fmt.Errorf("failed to number the PDUs kept for %s: %w", roomID, err)
			}
		}
		raw, err := r.p.Canonical()
		if err != nil {
			return err
		}
		seq++
		last[roomID] = seq
		if _, err = e.store.exec(ctx, insertPendingQuery, roomID, seq, r.id, string(raw), now); err != nil {
			return fmt.Errorf("failed to keep %s until the join of %s completes: %w", r.id, roomID, err)
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
		room, err := e.store.getRoom(ctx, roomID)
		if err != nil {
			return err
		} else if room == nil || room.status != statusActive {
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
	rows, err := e.db.Query(ctx, pendingQuery, room.RoomID, maxPDUsPerTxn)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", room.RoomID, err)
	}
	defer rows.Close()
	var objs []*received
	var last int64
	for rows.Next() {
		var raw string
		if err = rows.Scan(&last, &raw); err != nil {
			return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", room.RoomID, err)
		}
		// Verified when they arrived; kept in canonical form after verification (a redacted copy if its content hash
		// did not match).
		r := &received{raw: json.RawMessage(raw), room: room}
		if r.p, err = parseStored(r.raw); err == nil {
			r.id, err = eventID(r.p)
		}
		if err != nil {
			zerolog.Ctx(ctx).Err(err).Str("room_id", room.RoomID).Msg("Kept PDU is unreadable, dropping it")
			continue
		}
		objs = append(objs, r)
	}
	if err = rows.Err(); err != nil {
		return nil, 0, fmt.Errorf("failed to read the PDUs kept for %s: %w", room.RoomID, err)
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
		_, err := e.store.exec(ctx, deletePendingQuery, room.RoomID, last)
		return err
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
	rows, err := e.db.Query(ctx, storedJoinsQuery)
	if err != nil {
		return fmt.Errorf("failed to read joins in flight: %w", err)
	}
	joins := make(map[string]*storedJoin)
	for rows.Next() {
		j, err := scanStoredJoin(rows)
		if err != nil {
			rows.Close()
			return fmt.Errorf("failed to read joins in flight: %w", err)
		}
		joins[j.roomID] = j
	}
	rows.Close()
	if err = rows.Err(); err != nil {
		return fmt.Errorf("failed to read joins in flight: %w", err)
	}
	rooms, err := e.store.listRooms(ctx)
	if err != nil {
		return err
	}
	for _, room := range rooms {
		if room.status != statusJoining {
			continue
		}
		if j := joins[room.RoomID]; j != nil && room.Role == RoleParticipant {
			e.resumable = append(e.resumable, j)
		} else if err = e.abandonJoining(ctx, room.RoomID); err != nil {
			return err
		}
	}
	pending, err := e.db.Query(ctx, pendingRoomsQuery)
	if err != nil {
		return fmt.Errorf("failed to read rooms with kept PDUs: %w", err)
	}
	defer pending.Close()
	for pending.Next() {
		var roomID string
		if err = pending.Scan(&roomID); err != nil {
			return fmt.Errorf("failed to read rooms with kept PDUs: %w", err)
		}
		e.pendingRooms.Store(roomID, struct{}{})
	}
	return pending.Err()
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
func (e *Engine) resumeJoin(ctx context.Context, j *storedJoin) {
	log := zerolog.Ctx(ctx).With().Str("room_id", j.roomID).Str("user_id", j.userID).Logger()
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
func (e *Engine) resumeJoinOnce(ctx context.Context, j *storedJoin) (bool, error) {
	e.joinLock.Lock()
	defer e.joinLock.Unlock()
	current, err := e.storedJoin(ctx, j.roomID)
	if err != nil {
		return false, err
	} else if current == nil || string(current.lpdu) != string(j.lpdu) {
		return true, nil
	}
	room, err := e.store.getRoom(ctx, j.roomID)
	if err != nil {
		return false, err
	} else if room == nil || room.status != statusJoining {
		return true, nil
	}
	lpdu, err := parseStored(j.lpdu)
	if err != nil {
		return true, errors.Join(fmt.Errorf("stored join LPDU is unreadable: %w", err), e.abandonJoining(ctx, j.roomID))
	}
	lpduID, err := eventID(lpdu)
	if err != nil {
		return true, errors.Join(err, e.abandonJoining(ctx, j.roomID))
	}
	resp, err := e.remote.SendJoin(ctx, room.HubServer, lpduID, j.lpdu)
	if err != nil {
		if joinRefused(err) {
			return true, errors.Join(fmt.Errorf("hub refused the join: %w", err), e.abandonJoining(ctx, j.roomID))
		}
		return false, fmt.Errorf("failed to send_join: %w", err)
	}
	info := &RoomInfo{RoomID: j.roomID, RoomVersion: j.roomVersion, HubServer: room.HubServer, Role: RoleParticipant,
		status: statusJoining}
	if _, err = e.storeJoin(ctx, info, lpdu, resp, false); err != nil {
		if errors.Is(err, ErrBadRemoteAnswer) {
			return true, errors.Join(err, e.abandonJoining(ctx, j.roomID))
		}
		return false, err
	}
	return true, e.applyPending(ctx, j.roomID)
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
