package bridgedb

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix/id"
)

const (
	eventColumns        = `dag_room_id, dag_event_id, lm_room_id, lm_event_id, lpdu_id, origin, sender, created_at`
	getEventByDAGQuery  = `SELECT ` + eventColumns + ` FROM bridge_event WHERE dag_event_id=$1`
	getEventByLMQuery   = `SELECT ` + eventColumns + ` FROM bridge_event WHERE lm_event_id=$1`
	getEventByLPDUQuery = `SELECT ` + eventColumns + ` FROM bridge_event WHERE lpdu_id=$1`
	insertEventQuery    = `INSERT INTO bridge_event (` + eventColumns + `) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`
	insertNewEventQuery = insertEventQuery + ` ON CONFLICT (dag_event_id) DO NOTHING`
	// The hub's echo of an LPDU may come back before the DAG side has stored the LPDU ID (the hub is fast, the
	// database commit is not), so both writes are upserts on lpdu_id and meet in one row whichever comes first.
	insertLPDUQuery = `INSERT INTO bridge_event (` + eventColumns + `) VALUES ($1, $2, $3, NULL, $4, 'dag', $5, $6)
		ON CONFLICT (lpdu_id) DO UPDATE SET dag_event_id=excluded.dag_event_id, sender=excluded.sender`
	confirmLPDUQuery = `INSERT INTO bridge_event (` + eventColumns + `) VALUES ($1, NULL, $2, $3, $4, 'dag', '', $5)
		ON CONFLICT (lpdu_id) DO UPDATE SET lm_event_id=excluded.lm_event_id WHERE bridge_event.lm_event_id IS NULL`
)

// Origin is the side an event was first sent on.
type Origin string

const (
	// OriginDAG is the homeserver's room.
	OriginDAG Origin = "dag"
	// OriginLM is the LM room.
	OriginLM Origin = "lm"
)

// EventMapping is one event seen on both sides. LMEventID is empty while an LPDU waits for the hub's echo.
type EventMapping struct {
	DAGRoomID  id.RoomID
	DAGEventID id.EventID
	LMRoomID   string
	LMEventID  string
	LPDUID     string
	Origin     Origin
	Sender     string
	CreatedAt  time.Time
}

// Scan implements dbutil.DataStruct.
func (m *EventMapping) Scan(row dbutil.Scannable) (*EventMapping, error) {
	var dagEventID, lmEventID, lpduID sql.NullString
	var createdAt int64
	if err := row.Scan(&m.DAGRoomID, &dagEventID, &m.LMRoomID, &lmEventID, &lpduID, &m.Origin, &m.Sender, &createdAt); err != nil {
		return nil, err
	}
	m.DAGEventID, m.LMEventID, m.LPDUID = id.EventID(dagEventID.String), lmEventID.String, lpduID.String
	m.CreatedAt = time.UnixMilli(createdAt)
	return m, nil
}

func nullable(s string) sql.NullString {
	return sql.NullString{String: s, Valid: s != ""}
}

func (db *Database) getEvent(ctx context.Context, query, arg string) (*EventMapping, error) {
	m, err := db.events.QueryOne(ctx, query, arg)
	if err != nil {
		return nil, fmt.Errorf("failed to get event mapping: %w", err)
	}
	return m, nil
}

// GetEventByDAG returns the mapping of a DAG event, or nil.
func (db *Database) GetEventByDAG(ctx context.Context, eventID id.EventID) (*EventMapping, error) {
	return db.getEvent(ctx, getEventByDAGQuery, string(eventID))
}

// GetEventByLM returns the mapping of an LM event, or nil.
func (db *Database) GetEventByLM(ctx context.Context, eventID string) (*EventMapping, error) {
	return db.getEvent(ctx, getEventByLMQuery, eventID)
}

// GetEventByLPDU returns the mapping of an LPDU we sent, or nil.
func (db *Database) GetEventByLPDU(ctx context.Context, lpduID string) (*EventMapping, error) {
	return db.getEvent(ctx, getEventByLPDUQuery, lpduID)
}

// InsertEvent stores a mapping. Both IDs are unique: a second mapping for either is an error.
func (db *Database) InsertEvent(ctx context.Context, m *EventMapping) error {
	if m.DAGEventID == "" && m.LMEventID == "" {
		return errors.New("failed to insert event mapping: neither side has an event ID")
	}
	_, err := db.Exec(ctx, insertEventQuery, m.DAGRoomID, nullable(string(m.DAGEventID)), m.LMRoomID,
		nullable(m.LMEventID), nullable(m.LPDUID), m.Origin, m.Sender, m.CreatedAt.UnixMilli())
	if err != nil {
		return fmt.Errorf("failed to insert event mapping: %w", err)
	}
	return nil
}

// InsertEventUnlessDAGMapped stores a mapping unless its DAG event is mapped already, and says whether it stored it.
// A homeserver answers a state event equal to the current one with the existing event's ID, which may already stand
// for another LM event; the map keeps its first pairing.
func (db *Database) InsertEventUnlessDAGMapped(ctx context.Context, m *EventMapping) (bool, error) {
	res, err := db.Exec(ctx, insertNewEventQuery, m.DAGRoomID, nullable(string(m.DAGEventID)), m.LMRoomID,
		nullable(m.LMEventID), nullable(m.LPDUID), m.Origin, m.Sender, m.CreatedAt.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to insert event mapping: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to count inserted mappings: %w", err)
	}
	return n > 0, nil
}

// InsertLPDU records a DAG event sent as an LPDU to another hub; ConfirmLPDU adds the LM event ID when the hub's PDU
// arrives, in either order.
func (db *Database) InsertLPDU(ctx context.Context, dagRoomID id.RoomID, dagEventID id.EventID, lmRoomID, lpduID, sender string, at time.Time) error {
	if _, err := db.Exec(ctx, insertLPDUQuery, dagRoomID, dagEventID, lmRoomID, lpduID, sender, at.UnixMilli()); err != nil {
		return fmt.Errorf("failed to insert LPDU mapping: %w", err)
	}
	return nil
}

// ConfirmLPDU fills in the LM event ID of one of our LPDUs from the hub's PDU. It says whether the row changed: false
// for an echo seen before.
func (db *Database) ConfirmLPDU(ctx context.Context, dagRoomID id.RoomID, lmRoomID, lpduID, lmEventID string, at time.Time) (bool, error) {
	res, err := db.Exec(ctx, confirmLPDUQuery, dagRoomID, lmRoomID, lmEventID, lpduID, at.UnixMilli())
	if err != nil {
		return false, fmt.Errorf("failed to confirm LPDU: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("failed to count confirmed LPDUs: %w", err)
	}
	return n > 0, nil
}
