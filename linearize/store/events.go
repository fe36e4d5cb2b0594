package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/linearize/pdu"
)

const (
	lastEventQuery = `SELECT idx, event_id FROM lm_event WHERE room_id=$1 ORDER BY idx DESC LIMIT 1`
	getEventQuery  = `
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
	eventByLPDUQuery = `SELECT room_id, idx, event_id, lpdu_id, pdu FROM lm_event WHERE room_id=$1 AND lpdu_id=$2`
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
	insertEventQuery   = `INSERT INTO lm_event (room_id, idx, event_id, lpdu_id, event_type, state_key, sender, pdu, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`
	insertOutlierQuery = `INSERT INTO lm_outlier (event_id, room_id, pdu) VALUES ($1, $2, $3) ON CONFLICT (event_id) DO NOTHING`
	upsertStateQuery   = `
		INSERT INTO lm_current_state (room_id, event_type, state_key, event_id, membership) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_id, event_type, state_key) DO UPDATE SET event_id=excluded.event_id, membership=excluded.membership
	`
	currentStateQuery = `
		SELECT event_type, state_key, event_id, membership FROM lm_current_state WHERE room_id=$1
	`
	joinedMembersQuery = `
		SELECT state_key FROM lm_current_state WHERE room_id=$1 AND event_type='m.room.member' AND membership='join'
	`
	// Followed by one placeholder per event ID and a closing parenthesis.
	eventBodiesPrefix = `SELECT event_id, pdu FROM lm_event WHERE event_id IN (`
	// Followed by one placeholder per LPDU ID and a closing parenthesis.
	loggedLPDUsPrefix = `SELECT lpdu_id FROM lm_event WHERE lpdu_id IN (`
)

var insertEventsBuilder = dbutil.NewMassInsertBuilder[EventRow, [0]any, [9]any](insertEventQuery,
	"($%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d, $%d)")

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

// EventRow is one lm_event row to insert. InsertEvents writes a batch's rows in one statement (dbutil's mass insert),
// so it costs a statement per batch rather than per row.
type EventRow struct {
	RoomID, EventID, Type, Sender string
	// PDU is the event in canonical JSON.
	PDU        string
	Index      int64
	ReceivedAt int64
	LPDUID     string
	StateKey   *string
}

// GetMassInsertValues implements dbutil.MassInsertable.
func (r EventRow) GetMassInsertValues() [9]any {
	var stateKey sql.NullString
	if r.StateKey != nil {
		stateKey = sql.NullString{String: *r.StateKey, Valid: true}
	}
	return [9]any{r.RoomID, r.Index, r.EventID, nullString(r.LPDUID), r.Type, stateKey, r.Sender, r.PDU, r.ReceivedAt}
}

// massInsert runs one INSERT of rows through builder; no rows is no statement.
func massInsert[Item dbutil.MassInsertable[Dyn], Dyn dbutil.Array](ctx context.Context, s *Store,
	builder *dbutil.MassInsertBuilder[Item, [0]any, Dyn], rows []Item) error {
	if len(rows) == 0 {
		return nil
	}
	query, args := builder.Build([0]any{}, rows)
	_, err := s.exec(ctx, query, args...)
	return err
}

// InsertEvents appends rows to the log in one statement.
func (s *Store) InsertEvents(ctx context.Context, rows []EventRow) error {
	return massInsert(ctx, s, insertEventsBuilder, rows)
}

// LastEvent returns the head of a room's log; idx 0 and "" for an empty log.
func (s *Store) LastEvent(ctx context.Context, roomID string) (int64, string, error) {
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

// InsertOutlier keeps an event that is not in the log (send_join's state and auth chain).
func (s *Store) InsertOutlier(ctx context.Context, roomID, eventID string, raw json.RawMessage) error {
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

// GetEvent returns a logged event or an outlier, or nil when the event is unknown.
func (s *Store) GetEvent(ctx context.Context, eventID string) (*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, getEventQuery, eventID))
	if err != nil {
		return nil, fmt.Errorf("failed to get event %s: %w", eventID, err)
	} else if len(evs) == 0 {
		return nil, nil
	}
	return evs[0], nil
}

// EventByLPDU returns the logged event completed from an LPDU, or nil.
func (s *Store) EventByLPDU(ctx context.Context, roomID, lpduID string) (*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, eventByLPDUQuery, roomID, lpduID))
	if err != nil {
		return nil, fmt.Errorf("failed to look up LPDU %s: %w", lpduID, err)
	} else if len(evs) == 0 {
		return nil, nil
	}
	return evs[0], nil
}

// EventsAfter returns up to limit events of a room's log after index after, oldest first.
func (s *Store) EventsAfter(ctx context.Context, roomID string, after int64, limit int) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, eventsAfterQuery, roomID, after, limit))
	if err != nil {
		return nil, fmt.Errorf("failed to read log of %s after %d: %w", roomID, after, err)
	}
	return evs, nil
}

// EventsUpTo returns up to limit events ending with idx, newest first.
func (s *Store) EventsUpTo(ctx context.Context, roomID string, idx int64, limit int) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, eventsBeforeQuery, roomID, idx, limit))
	if err != nil {
		return nil, fmt.Errorf("failed to read log of %s up to %d: %w", roomID, idx, err)
	}
	return evs, nil
}

// StateBefore returns the state events in force before the event at idx, in log order.
func (s *Store) StateBefore(ctx context.Context, roomID string, idx int64) ([]*StoredEvent, error) {
	evs, err := scanEvents(s.db.Query(ctx, stateBeforeQuery, roomID, idx))
	if err != nil {
		return nil, fmt.Errorf("failed to read state of %s before %d: %w", roomID, idx, err)
	}
	return evs, nil
}

// SetState sets one entry of a room's current state.
func (s *Store) SetState(ctx context.Context, roomID, eventType, stateKey, eventID, membership string) error {
	_, err := s.exec(ctx, upsertStateQuery, roomID, eventType, stateKey, eventID, nullString(membership))
	if err != nil {
		return fmt.Errorf("failed to update state of %s: %w", roomID, err)
	}
	return nil
}

// CurrentState returns a room's current state entries.
func (s *Store) CurrentState(ctx context.Context, roomID string) ([]StateEntry, error) {
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

// ServerJoined reports whether a user of server is joined to roomID in its current state.
func (s *Store) ServerJoined(ctx context.Context, roomID, server string) (bool, error) {
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

// LoggedLPDUs returns those of lpduIDs whose completion the log holds.
func (s *Store) LoggedLPDUs(ctx context.Context, lpduIDs []string) ([]string, error) {
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
func (s *Store) eventBodies(ctx context.Context, eventIDs []string) (map[string]json.RawMessage, error) {
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
