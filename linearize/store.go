package linearize

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

//go:embed upgrades/*.sql
var upgrades embed.FS

var upgradeTable = dbutil.BuildUpgradeTable().WithFSPath(upgrades, "upgrades").Finish()

const (
	insertRoomQuery = `
		INSERT INTO lm_room (room_id, room_version, hub_server, role, status, created_at) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (room_id) DO UPDATE SET hub_server=excluded.hub_server, role=excluded.role, status=excluded.status
	`
	setRoomStatusQuery = `UPDATE lm_room SET status=$2 WHERE room_id=$1`
	// A join that did not complete: a room we hold events of goes back to active, one we never joined is forgotten.
	reviveJoiningQuery = `
		UPDATE lm_room SET status='active'
		WHERE status='joining' AND ($1='' OR room_id=$1) AND EXISTS (SELECT 1 FROM lm_event WHERE lm_event.room_id=lm_room.room_id)
	`
	forgetJoiningQuery = `DELETE FROM lm_room WHERE status='joining' AND ($1='' OR room_id=$1)`
	getRoomQuery       = `SELECT room_id, room_version, hub_server, role, status FROM lm_room WHERE room_id=$1`
	listRoomsQuery     = `SELECT room_id, room_version, hub_server, role, status FROM lm_room`
	lastEventQuery     = `SELECT idx, event_id FROM lm_event WHERE room_id=$1 ORDER BY idx DESC LIMIT 1`
	getEventQuery      = `
		SELECT room_id, idx, event_id, lpdu_id, pdu FROM lm_event WHERE event_id=$1
		UNION ALL
		SELECT room_id, -1, event_id, NULL, pdu FROM lm_outlier WHERE event_id=$1
	`
	eventsAfterQuery = `
		SELECT room_id, idx, event_id, lpdu_id, pdu FROM lm_event WHERE room_id=$1 AND idx>$2 ORDER BY idx LIMIT $3
	`
	eventsBeforeQuery = `
		SELECT room_id, idx, event_id, lpdu_id, pdu FROM lm_event WHERE room_id=$1 AND idx<=$2 ORDER BY idx DESC LIMIT $3
	`
	// The newest state event per (type, state_key) strictly before idx: the state before that event.
	stateBeforeQuery = `
		SELECT e.room_id, e.idx, e.event_id, e.lpdu_id, e.pdu FROM lm_event e
		WHERE e.room_id=$1 AND e.idx<$2 AND e.state_key IS NOT NULL AND e.idx=(
			SELECT MAX(s.idx) FROM lm_event s
			WHERE s.room_id=e.room_id AND s.event_type=e.event_type AND s.state_key=e.state_key AND s.state_key IS NOT NULL
				AND s.idx<$2
		)
		ORDER BY e.idx
	`
	insertOutlierQuery = `INSERT INTO lm_outlier (event_id, room_id, pdu) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING`
	upsertStateQuery   = `
		INSERT INTO lm_current_state (room_id, event_type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id=excluded.event_id, membership=excluded.membership
	`
	currentStateQuery = `
		SELECT event_type, state_key, event_id, membership FROM lm_current_state WHERE room_id=$1
	`
	getReceivedTxnQuery    = `SELECT response FROM lm_received_txn WHERE origin=$1 AND txn_id=$2`
	insertReceivedTxnQuery = `INSERT INTO lm_received_txn (origin, txn_id, response, received_at) VALUES ($1, $2, $3, $4)`
	// Every seq given is in a queued row, or was deleted by a commit that kept it as its destination's sent_up_to.
	maxOutboxSeqQuery = `
		SELECT MAX(seq) FROM (
			SELECT COALESCE(MAX(seq), 0) AS seq FROM lm_outbox
			UNION ALL SELECT COALESCE(MAX(sent_up_to), 0) FROM lm_destination
		) AS seqs
	`
	outboxDestsQuery = `SELECT DISTINCT destination FROM lm_outbox`
	outboxBatchQuery = `
		SELECT seq, room_id, event_id, COALESCE(lpdu, ''), lpdu IS NOT NULL FROM lm_outbox
		WHERE destination=$1 AND seq<=$2 ORDER BY seq LIMIT $3
	`
	outboxRoomsQuery    = `SELECT DISTINCT room_id, lpdu IS NOT NULL FROM lm_outbox WHERE destination=$1`
	outboxEventIDsQuery = `SELECT seq, event_id FROM lm_outbox WHERE destination=$1`
	joinedMembersQuery  = `
		SELECT state_key FROM lm_current_state WHERE room_id=$1 AND event_type='m.room.member' AND membership='join'
	`
	// Followed by one placeholder per event ID and a closing parenthesis.
	eventBodiesPrefix = `SELECT event_id, pdu FROM lm_event WHERE event_id IN (`
	// Followed by one placeholder per LPDU ID and a closing parenthesis.
	loggedLPDUsPrefix = `SELECT lpdu_id FROM lm_event WHERE lpdu_id IN (`
	deleteOutboxQuery = `DELETE FROM lm_outbox WHERE destination=$1 AND seq<=$2`
	getDestQuery      = `SELECT txn_last_seq, retry_count, next_attempt FROM lm_destination WHERE destination=$1`
	// sent_up_to only goes up: callers that delete no rows pass 0.
	upsertDestQuery = `
		INSERT INTO lm_destination (destination, txn_last_seq, retry_count, next_attempt, last_error, sent_up_to)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (destination) DO UPDATE SET txn_last_seq=excluded.txn_last_seq, retry_count=excluded.retry_count,
			next_attempt=excluded.next_attempt, last_error=excluded.last_error,
			sent_up_to=CASE WHEN excluded.sent_up_to > lm_destination.sent_up_to
				THEN excluded.sent_up_to ELSE lm_destination.sent_up_to END
	`
	// The in-flight mark of an idle destination (txn_last_seq 0) set to $2; a busy one keeps its own.
	markIdleDestQuery = `
		INSERT INTO lm_destination (destination, txn_last_seq, retry_count, next_attempt) VALUES ($1, $2, 0, 0)
		ON CONFLICT (destination) DO UPDATE SET txn_last_seq=excluded.txn_last_seq WHERE lm_destination.txn_last_seq=0
	`
	// The mark cleared if it is still the ended transaction's; the seqs deleted kept either way.
	endDestTxnQuery = `
		UPDATE lm_destination SET txn_last_seq=CASE WHEN txn_last_seq=$2 THEN 0 ELSE txn_last_seq END,
			sent_up_to=CASE WHEN sent_up_to < $2 THEN $2 ELSE sent_up_to END
		WHERE destination=$1
	`
	getSendKeyQuery    = `SELECT event_id FROM lm_send_key WHERE room_id=$1 AND send_key=$2`
	insertSendKeyQuery = `INSERT INTO lm_send_key (room_id, send_key, event_id, sent_at) VALUES ($1, $2, $3, $4)`
	getCursorQuery     = `SELECT idx FROM lm_listener_cursor WHERE listener=$1 AND room_id=$2`
	setCursorQuery     = `
		INSERT INTO lm_listener_cursor (listener, room_id, idx) VALUES ($1, $2, $3)
		ON CONFLICT (listener, room_id) DO UPDATE SET idx=excluded.idx
	`
	insertInviteQuery = `
		INSERT INTO lm_invite (event_id, room_id, target, room_version, pdu, stripped, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (event_id) DO NOTHING
	`
	undeliveredInvitesQuery = `
		SELECT i.event_id, i.room_id, i.target, i.room_version, i.pdu, i.stripped FROM lm_invite i
		WHERE NOT EXISTS (SELECT 1 FROM lm_invite_delivered d WHERE d.listener=$1 AND d.event_id=i.event_id)
		ORDER BY i.received_at
	`
	markInviteDeliveredQuery = `INSERT INTO lm_invite_delivered (listener, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`
)

// Room roles and statuses as stored in lm_room.
const (
	RoleHub         = "hub"
	RoleParticipant = "participant"

	statusJoining = "joining"
	statusActive  = "active"
)

// RoomInfo is what the engine knows about one LM room.
type RoomInfo struct {
	RoomID      string
	RoomVersion string
	HubServer   string
	// Role is RoleHub or RoleParticipant.
	Role   string
	status string
}

// StoredEvent is one row of a room's log (Index ≥ 1) or an outlier known from send_join (Index -1).
type StoredEvent struct {
	RoomID  string
	Index   int64
	EventID string
	// LPDUID is the ID of the LPDU this PDU was completed from, when a participant sent it through the hub.
	LPDUID string
	PDU    json.RawMessage
}

// StateEntry is one entry of a room's current state.
type StateEntry struct {
	Type       string
	StateKey   string
	EventID    string
	Membership string
}

// store is the engine's tables. Every write goes through exec or write, which serialise them on a Go mutex: SQLite
// allows one writer, and its busy handler sleeps for milliseconds when writers collide, which would dominate latency.
type store struct {
	db   *dbutil.Database
	lock sync.Mutex
	// rooms caches lm_room rows, read on every received PDU; any write to lm_room clears it, again after the
	// transaction ends, so a reader cannot cache a row from before a commit.
	rooms       sync.Map
	roomWritten bool
	// roomGen changes on every clear; a reader caches what it read only if no clear happened meanwhile, checked and
	// stored under cacheLock so that a clear cannot fall between the two.
	roomGen   atomic.Int64
	cacheLock sync.Mutex
	// commits counts write transactions and autocommitted statements, for the benchmarks.
	commits atomic.Int64
}

type inWriteKey struct{}

// write runs fn in one database transaction holding the write lock (or inside the caller's, if there is one).
func (s *store) write(ctx context.Context, fn func(ctx context.Context) error) error {
	if ctx.Value(inWriteKey{}) != nil {
		return fn(ctx)
	}
	s.lock.Lock()
	defer s.lock.Unlock()
	// Not cancellable: a write that has begun should commit, and database/sql with go-sqlite3 starts a goroutine per
	// statement to watch a cancellable context.
	s.commits.Add(1)
	err := s.db.DoTxn(context.WithValue(context.WithoutCancel(ctx), inWriteKey{}, true), nil, fn)
	if s.roomWritten {
		s.roomWritten = false
		s.clearRooms()
	}
	return err
}

// writeRoom runs a statement that changes lm_room, keeping the room cache right.
func (s *store) writeRoom(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := s.write(ctx, func(ctx context.Context) error {
		s.roomChanged()
		var err error
		res, err = s.db.Exec(ctx, query, args...)
		return err
	})
	return res, err
}

// exec runs one write statement under the write lock (or inside the caller's transaction).
func (s *store) exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	if ctx.Value(inWriteKey{}) != nil {
		return s.db.Exec(ctx, query, args...)
	}
	s.lock.Lock()
	defer s.lock.Unlock()
	s.commits.Add(1)
	return s.db.Exec(context.WithoutCancel(ctx), query, args...)
}

func scanRoom(row dbutil.Scannable) (*RoomInfo, error) {
	var r RoomInfo
	if err := row.Scan(&r.RoomID, &r.RoomVersion, &r.HubServer, &r.Role, &r.status); err != nil {
		return nil, err
	}
	return &r, nil
}

func (s *store) getRoom(ctx context.Context, roomID string) (*RoomInfo, error) {
	if r, ok := s.rooms.Load(roomID); ok {
		info := *r.(*RoomInfo)
		return &info, nil
	}
	gen := s.roomGen.Load()
	r, err := scanRoom(s.db.QueryRow(ctx, getRoomQuery, roomID))
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to get room %s: %w", roomID, err)
	}
	// Only settled rooms are cached: a joining room changes status within moments.
	if ctx.Value(inWriteKey{}) == nil && r.status == statusActive {
		cached := *r
		s.cacheLock.Lock()
		if s.roomGen.Load() == gen {
			s.rooms.Store(roomID, &cached)
		}
		s.cacheLock.Unlock()
	}
	return r, nil
}

// roomChanged is called by every write to lm_room, with the write lock held.
func (s *store) roomChanged() {
	s.roomWritten = true
	s.clearRooms()
}

// clearRooms empties the room cache; a reader that queried before it cannot store its now stale row after it.
func (s *store) clearRooms() {
	s.cacheLock.Lock()
	s.roomGen.Add(1)
	s.rooms.Clear()
	s.cacheLock.Unlock()
}

func (s *store) listRooms(ctx context.Context) ([]*RoomInfo, error) {
	rows, err := s.db.Query(ctx, listRoomsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to list rooms: %w", err)
	}
	defer rows.Close()
	var out []*RoomInfo
	for rows.Next() {
		r, err := scanRoom(rows)
		if err != nil {
			return nil, fmt.Errorf("failed to scan room: %w", err)
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *store) putRoom(ctx context.Context, r *RoomInfo, now int64) error {
	_, err := s.writeRoom(ctx, insertRoomQuery, r.RoomID, r.RoomVersion, r.HubServer, r.Role, r.status, now)
	if err != nil {
		return fmt.Errorf("failed to store room %s: %w", r.RoomID, err)
	}
	return nil
}

// abandonJoin undoes the joining marker of roomID ("" for every room, at start-up).
func (s *store) abandonJoin(ctx context.Context, roomID string) error {
	return s.write(ctx, func(ctx context.Context) error {
		s.roomChanged()
		if _, err := s.db.Exec(ctx, reviveJoiningQuery, roomID); err != nil {
			return fmt.Errorf("failed to revive joining rooms: %w", err)
		}
		if _, err := s.db.Exec(ctx, forgetJoiningQuery, roomID); err != nil {
			return fmt.Errorf("failed to forget joining rooms: %w", err)
		}
		return nil
	})
}

func (s *store) setRoomStatus(ctx context.Context, roomID, status string) error {
	_, err := s.writeRoom(ctx, setRoomStatusQuery, roomID, status)
	if err != nil {
		return fmt.Errorf("failed to set status of room %s: %w", roomID, err)
	}
	return nil
}

// lastEvent returns the head of a room's log; idx 0 and "" for an empty log.
func (s *store) lastEvent(ctx context.Context, roomID string) (int64, string, error) {
	var idx int64
	var eventID string
	err := s.db.QueryRow(ctx, lastEventQuery, roomID).Scan(&idx, &eventID)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	} else if err != nil {
		return 0, "", fmt.Errorf("failed to get head of room %s: %w", roomID, err)
	}
	return idx, eventID, nil
}

func nullString(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func nullStringPtr(s *string) sql.NullString {
	if s == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *s, Valid: true}
}

func (s *store) insertOutlier(ctx context.Context, roomID, eventID string, raw json.RawMessage) error {
	_, err := s.exec(ctx, insertOutlierQuery, eventID, roomID, string(raw))
	if err != nil {
		return fmt.Errorf("failed to store outlier %s: %w", eventID, err)
	}
	return nil
}

func scanEvents(rows dbutil.Rows, err error) ([]*StoredEvent, error) {
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*StoredEvent
	for rows.Next() {
		var ev StoredEvent
		var lpduID sql.NullString
		var raw string
		if err := rows.Scan(&ev.RoomID, &ev.Index, &ev.EventID, &lpduID, &raw); err != nil {
			return nil, err
		}
		ev.LPDUID = lpduID.String
		ev.PDU = json.RawMessage(raw)
		out = append(out, &ev)
	}
	return out, rows.Err()
}

// getEvent returns a logged event or an outlier, or nil when the event is unknown.
func (s *store) getEvent(ctx context.Context, eventID string) (*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, getEventQuery, eventID))
	if err != nil {
		return nil, fmt.Errorf("failed to get event %s: %w", eventID, err)
	} else if len(evs) == 0 {
		return nil, nil
	}
	return evs[0], nil
}

func (s *store) eventsAfter(ctx context.Context, roomID string, after int64, limit int) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, eventsAfterQuery, roomID, after, limit))
	if err != nil {
		return nil, fmt.Errorf("failed to read log of %s after %d: %w", roomID, after, err)
	}
	return evs, nil
}

// eventsUpTo returns up to limit events ending with idx, newest first.
func (s *store) eventsUpTo(ctx context.Context, roomID string, idx int64, limit int) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, eventsBeforeQuery, roomID, idx, limit))
	if err != nil {
		return nil, fmt.Errorf("failed to read log of %s up to %d: %w", roomID, idx, err)
	}
	return evs, nil
}

func (s *store) stateBefore(ctx context.Context, roomID string, idx int64) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, stateBeforeQuery, roomID, idx))
	if err != nil {
		return nil, fmt.Errorf("failed to read state of %s before %d: %w", roomID, idx, err)
	}
	return evs, nil
}

func (s *store) setState(ctx context.Context, roomID, eventType, stateKey, eventID, membership string) error {
	_, err := s.exec(ctx, upsertStateQuery, roomID, eventType, stateKey, eventID, nullString(membership))
	if err != nil {
		return fmt.Errorf("failed to update state of %s: %w", roomID, err)
	}
	return nil
}

func (s *store) currentState(ctx context.Context, roomID string) ([]StateEntry, error) {
	rows, err := s.db.Query(ctx, currentStateQuery, roomID)
	if err != nil {
		return nil, fmt.Errorf("failed to read state of %s: %w", roomID, err)
	}
	defer rows.Close()
	var out []StateEntry
	for rows.Next() {
		var e StateEntry
		var membership sql.NullString
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventID, &membership); err != nil {
			return nil, fmt.Errorf("failed to scan state of %s: %w", roomID, err)
		}
		e.Membership = membership.String
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *store) receivedTxn(ctx context.Context, origin, txnID string) (json.RawMessage, error) {
	var resp string
	err := s.db.QueryRow(ctx, getReceivedTxnQuery, origin, txnID).Scan(&resp)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	} else if err != nil {
		return nil, fmt.Errorf("failed to look up transaction %s from %s: %w", txnID, origin, err)
	}
	return json.RawMessage(resp), nil
}

func (s *store) putReceivedTxn(ctx context.Context, origin, txnID string, resp json.RawMessage, now int64) error {
	_, err := s.exec(ctx, insertReceivedTxnQuery, origin, txnID, string(resp), now)
	if err != nil {
		return fmt.Errorf("failed to store transaction %s from %s: %w", txnID, origin, err)
	}
	return nil
}

func (s *store) maxOutboxSeq(ctx context.Context) (int64, error) {
	var seq int64
	if err := s.db.QueryRow(ctx, maxOutboxSeqQuery).Scan(&seq); err != nil {
		return 0, fmt.Errorf("failed to read outbox sequence: %w", err)
	}
	return seq, nil
}

func (s *store) outboxDestinations(ctx context.Context) ([]string, error) {
	rows, err := s.db.Query(ctx, outboxDestsQuery)
	if err != nil {
		return nil, fmt.Errorf("failed to list outbox destinations: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, err
		}
		out = append(out, d)
	}
	return out, rows.Err()
}

// outboxRooms returns the rooms destination has rows queued for, and whether any of them is an LPDU.
func (s *store) outboxRooms(ctx context.Context, destination string) ([]string, bool, error) {
	rows, err := s.db.Query(ctx, outboxRoomsQuery, destination)
	if err != nil {
		return nil, false, fmt.Errorf("failed to list the rooms queued for %s: %w", destination, err)
	}
	defer rows.Close()
	var rooms []string
	lpdus := false
	for rows.Next() {
		var roomID string
		var lpdu bool
		if err := rows.Scan(&roomID, &lpdu); err != nil {
			return nil, false, fmt.Errorf("failed to scan the rooms queued for %s: %w", destination, err)
		}
		rooms = append(rooms, roomID)
		lpdus = lpdus || lpdu
	}
	return rooms, lpdus, rows.Err()
}

// outboxEventIDs returns the event IDs of destination's queued rows and their highest seq.
func (s *store) outboxEventIDs(ctx context.Context, destination string) ([]string, int64, error) {
	rows, err := s.db.Query(ctx, outboxEventIDsQuery, destination)
	if err != nil {
		return nil, 0, fmt.Errorf("failed to read the outbox of %s: %w", destination, err)
	}
	defer rows.Close()
	var ids []string
	var last int64
	for rows.Next() {
		var seq int64
		var id string
		if err := rows.Scan(&seq, &id); err != nil {
			return nil, 0, fmt.Errorf("failed to scan the outbox of %s: %w", destination, err)
		}
		ids = append(ids, id)
		last = max(last, seq)
	}
	return ids, last, rows.Err()
}

// serverJoined reports whether a user of server is joined to roomID in its current state.
func (s *store) serverJoined(ctx context.Context, roomID, server string) (bool, error) {
	rows, err := s.db.Query(ctx, joinedMembersQuery, roomID)
	if err != nil {
		return false, fmt.Errorf("failed to read the members of %s: %w", roomID, err)
	}
	defer rows.Close()
	for rows.Next() {
		var userID string
		if err := rows.Scan(&userID); err != nil {
			return false, fmt.Errorf("failed to scan the members of %s: %w", roomID, err)
		}
		if pdu.ServerName(userID) == server {
			return true, nil
		}
	}
	return false, rows.Err()
}

type outboxItem struct {
	seq     int64
	roomID  string
	eventID string
	body    json.RawMessage
	isLPDU  bool
	// held means body came from the fan-out bodies, to be released once sent.
	held bool
}

// outboxBatch reads up to limit outbox rows of destination up to seq maxSeq, ending before the row that would make
// more than maxLPDUsPerTxn LPDUs, with the bodies of log events taken from bodies where held, else read from the log in
// one query. The same rows give the same batch, so a retry after a crash sends the same transaction.
func (s *store) outboxBatch(ctx context.Context, destination string, maxSeq int64, limit int, bodies *fanoutBodies) ([]outboxItem, error) {
	rows, err := s.db.Query(ctx, outboxBatchQuery, destination, maxSeq, limit)
	if err != nil {
		return nil, fmt.Errorf("failed to read outbox of %s: %w", destination, err)
	}
	defer rows.Close()
	var out []outboxItem
	var missing []string
	lpdus := 0
	for rows.Next() {
		var it outboxItem
		var body string
		if err := rows.Scan(&it.seq, &it.roomID, &it.eventID, &body, &it.isLPDU); err != nil {
			return nil, fmt.Errorf("failed to scan outbox of %s: %w", destination, err)
		}
		if it.isLPDU {
			if lpdus++; lpdus > maxLPDUsPerTxn {
				break
			}
			it.body = json.RawMessage(body)
		} else if it.body, it.held = bodies.get(it.eventID); !it.held {
			missing = append(missing, it.eventID)
		}
		out = append(out, it)
	}
	if err = rows.Err(); err != nil || len(missing) == 0 {
		return out, err
	}
	found, err := s.eventBodies(ctx, missing)
	if err != nil {
		return nil, fmt.Errorf("failed to read outbox events of %s: %w", destination, err)
	}
	for i := range out {
		if !out[i].isLPDU && !out[i].held {
			// An event missing from the log (commitBatch writes both in one transaction) goes out empty.
			out[i].body = found[out[i].eventID]
		}
	}
	return out, nil
}

// inQuery appends to prefix one placeholder per ID and the closing parenthesis, and returns the IDs as arguments.
func inQuery(prefix string, ids []string) (string, []any) {
	var sb strings.Builder
	sb.WriteString(prefix)
	args := make([]any, len(ids))
	for i, id := range ids {
		if i > 0 {
			sb.WriteByte(',')
		}
		sb.WriteByte('$')
		sb.WriteString(strconv.Itoa(i + 1))
		args[i] = id
	}
	sb.WriteByte(')')
	return sb.String(), args
}

// loggedLPDUs returns those of lpduIDs whose completion the log holds.
func (s *store) loggedLPDUs(ctx context.Context, lpduIDs []string) ([]string, error) {
	query, args := inQuery(loggedLPDUsPrefix, lpduIDs)
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("failed to look up completed LPDUs: %w", err)
	}
	defer rows.Close()
	var found []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("failed to scan completed LPDUs: %w", err)
		}
		found = append(found, id)
	}
	return found, rows.Err()
}

// eventBodies reads the stored PDUs of log events by ID.
func (s *store) eventBodies(ctx context.Context, eventIDs []string) (map[string]json.RawMessage, error) {
	query, args := inQuery(eventBodiesPrefix, eventIDs)
	rows, err := s.db.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	found := make(map[string]json.RawMessage, len(eventIDs))
	for rows.Next() {
		var id, body string
		if err := rows.Scan(&id, &body); err != nil {
			return nil, err
		}
		found[id] = json.RawMessage(body)
	}
	return found, rows.Err()
}

func (s *store) deleteOutbox(ctx context.Context, destination string, upTo int64) error {
	_, err := s.exec(ctx, deleteOutboxQuery, destination, upTo)
	if err != nil {
		return fmt.Errorf("failed to clear outbox of %s: %w", destination, err)
	}
	return nil
}

type destState struct {
	txnLastSeq  int64
	retryCount  int
	nextAttempt int64
	// sentUpTo is set by a write that deletes rows to the highest seq it deletes. Once a destination's rows are all
	// delivered, it is all that says which seqs were given, so that a restart does not give them again; the
	// destination's row is written by that commit anyway, so keeping it costs no statement or page of its own.
	sentUpTo int64
}

func (s *store) getDest(ctx context.Context, destination string) (destState, error) {
	var d destState
	err := s.db.QueryRow(ctx, getDestQuery, destination).Scan(&d.txnLastSeq, &d.retryCount, &d.nextAttempt)
	if errors.Is(err, sql.ErrNoRows) {
		return destState{}, nil
	} else if err != nil {
		return d, fmt.Errorf("failed to read destination %s: %w", destination, err)
	}
	return d, nil
}

func (s *store) putDest(ctx context.Context, destination string, d destState, lastErr string) error {
	_, err := s.exec(ctx, upsertDestQuery, destination, d.txnLastSeq, d.retryCount, d.nextAttempt, nullString(lastErr), d.sentUpTo)
	if err != nil {
		return fmt.Errorf("failed to store destination %s: %w", destination, err)
	}
	return nil
}

// endAcked writes the deferred end of destination's transaction up to last: its rows deleted, last kept as sent and,
// unless the worker has marked the next one already, the destination idle.
func (s *store) endAcked(ctx context.Context, destination string, last int64) error {
	if err := s.deleteOutbox(ctx, destination, last); err != nil {
		return err
	}
	if _, err := s.exec(ctx, endDestTxnQuery, destination, last); err != nil {
		return fmt.Errorf("failed to end the transaction to %s: %w", destination, err)
	}
	return nil
}

// markIdleDest marks the rows up to lastSeq as destination's next transaction unless one is in flight already. The
// transaction stays what nextBatch reads for a mark: the first maxPDUsPerTxn rows up to it, whatever their order of
// arrival, so a retry after a crash sends the same one.
func (s *store) markIdleDest(ctx context.Context, destination string, lastSeq int64) error {
	if _, err := s.exec(ctx, markIdleDestQuery, destination, lastSeq); err != nil {
		return fmt.Errorf("failed to mark the next transaction to %s: %w", destination, err)
	}
	return nil
}

// sentWithKey returns the event or LPDU ID sent into roomID under an idempotency key, or "".
func (s *store) sentWithKey(ctx context.Context, roomID, key string) (string, error) {
	var id string
	err := s.db.QueryRow(ctx, getSendKeyQuery, roomID, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	} else if err != nil {
		return "", fmt.Errorf("failed to look up send key %s in %s: %w", key, roomID, err)
	}
	return id, nil
}

func (s *store) putSendKey(ctx context.Context, roomID, key, eventID string, now int64) error {
	if _, err := s.exec(ctx, insertSendKeyQuery, roomID, key, eventID, now); err != nil {
		return fmt.Errorf("failed to store send key %s in %s: %w", key, roomID, err)
	}
	return nil
}

func (s *store) cursor(ctx context.Context, listener, roomID string) (int64, error) {
	var idx int64
	err := s.db.QueryRow(ctx, getCursorQuery, listener, roomID).Scan(&idx)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	} else if err != nil {
		return 0, fmt.Errorf("failed to read cursor of %s in %s: %w", listener, roomID, err)
	}
	return idx, nil
}

func (s *store) setCursor(ctx context.Context, listener, roomID string, idx int64) error {
	_, err := s.exec(ctx, setCursorQuery, listener, roomID, idx)
	if err != nil {
		return fmt.Errorf("failed to store cursor of %s in %s: %w", listener, roomID, err)
	}
	return nil
}

func (s *store) putInvite(ctx context.Context, inv *Invite, now int64) error {
	stripped, err := json.Marshal(inv.StrippedState)
	if err != nil {
		return fmt.Errorf("failed to encode stripped state: %w", err)
	}
	_, err = s.exec(ctx, insertInviteQuery, inv.EventID, inv.RoomID, inv.Target, inv.RoomVersion, string(inv.Event),
		string(stripped), now)
	if err != nil {
		return fmt.Errorf("failed to store invite %s: %w", inv.EventID, err)
	}
	return nil
}

func (s *store) undeliveredInvites(ctx context.Context, listener string) ([]*Invite, error) {
	rows, err := s.db.Query(ctx, undeliveredInvitesQuery, listener)
	if err != nil {
		return nil, fmt.Errorf("failed to read invites: %w", err)
	}
	defer rows.Close()
	var out []*Invite
	for rows.Next() {
		var inv Invite
		var raw, stripped string
		if err := rows.Scan(&inv.EventID, &inv.RoomID, &inv.Target, &inv.RoomVersion, &raw, &stripped); err != nil {
			return nil, fmt.Errorf("failed to scan invite: %w", err)
		}
		inv.Event = json.RawMessage(raw)
		if err := json.Unmarshal([]byte(stripped), &inv.StrippedState); err != nil {
			return nil, fmt.Errorf("failed to decode stripped state of %s: %w", inv.EventID, err)
		}
		out = append(out, &inv)
	}
	return out, rows.Err()
}

func (s *store) markInviteDelivered(ctx context.Context, listener, eventID string) error {
	_, err := s.exec(ctx, markInviteDeliveredQuery, listener, eventID)
	if err != nil {
		return fmt.Errorf("failed to mark invite %s delivered: %w", eventID, err)
	}
	return nil
}
