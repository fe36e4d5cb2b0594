package appservice

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

const (
	getSendQuery = `SELECT started_at, COALESCE(event_id, '') FROM appservice_send WHERE txn_id=$1`
	// A send tried again starts its settling time afresh.
	startSendQuery = `
		INSERT INTO appservice_send (txn_id, room_id, sender, started_at) VALUES ($1, $2, $3, $4)
		ON CONFLICT (txn_id) DO UPDATE SET started_at=excluded.started_at
	`
	setSendEventQuery = `UPDATE appservice_send SET event_id=$2 WHERE txn_id=$1`
	pruneSendsQuery   = `DELETE FROM appservice_send WHERE started_at<$1`
)

// TxnMarkerKey is the content key under which SendMessage puts the transaction ID of every message it sends, so that
// an event an earlier attempt created can be recognised on the homeserver.
const TxnMarkerKey = "org.lmbridge.txn_id"

const (
	// resendSettle is how long after an attempt the homeserver is given to finish it before it is looked for: Dendrite
	// keeps processing the event of a request its client abandoned, and only then does it show in /messages.
	resendSettle = 5 * time.Second
	// resendLookBack is how many of the room's latest events are searched for an earlier attempt, in pages of
	// resendPage. A send is tried again at once after a crash or an error, so the earlier attempt is among the newest;
	// but the room moves on meanwhile. No filter is asked of the homeserver: Dendrite applies it after taking the
	// page, so a filtered page of the latest events would be searched, not the latest events of the sender.
	resendLookBack = 1000
	resendPage     = 100
	// sendRetention is how long the record of a send is kept.
	sendRetention = 7 * 24 * time.Hour
)

// sendLog records the sends made under deterministic transaction IDs (table appservice_send).
//
// The client-server API deduplicates a retried transaction ID, which is what makes a send after a crash safe. Dendrite
// v0.13.8 does so only from an in-memory cache that it fills once the event is created and the answer is still
// wanted: when the client goes away first (lmbridge killed, or a request timed out), the event is created anyway
// and the same transaction ID sent again makes a second event. So a send that was recorded before is looked for on
// the homeserver, by TxnMarkerKey in its content, before it goes out again.
type sendLog struct {
	db *dbutil.Database
}

// before is called before a message is sent under txnID. It returns the event an earlier attempt created, or "" when
// the message must be sent (and has been recorded as being sent).
func (s *sendLog) before(ctx context.Context, in *Intent, roomID id.RoomID, evtType event.Type, txnID string) (id.EventID, error) {
	var startedAt int64
	var eventID string
	err := s.db.QueryRow(ctx, getSendQuery, txnID).Scan(&startedAt, &eventID)
	switch {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return "", fmt.Errorf("failed to look up send %s: %w", txnID, err)
	case eventID != "":
		return id.EventID(eventID), nil
	default:
		found, err := s.findEarlier(ctx, in, roomID, evtType, txnID, time.UnixMilli(startedAt))
		if err != nil || found != "" {
			return found, err
		}
	}
	if _, err = s.db.Exec(ctx, startSendQuery, txnID, roomID, in.UserID, time.Now().UnixMilli()); err != nil {
		return "", fmt.Errorf("failed to record send %s: %w", txnID, err)
	}
	return "", nil
}

// findEarlier looks for the event of an attempt started at startedAt whose outcome is unknown.
func (s *sendLog) findEarlier(ctx context.Context, in *Intent, roomID id.RoomID, evtType event.Type, txnID string, startedAt time.Time) (id.EventID, error) {
	if wait := time.Until(startedAt.Add(resendSettle)); wait > 0 {
		select {
		case <-time.After(wait):
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	log := zerolog.Ctx(ctx).With().Str("txn_id", txnID).Stringer("room_id", roomID).Stringer("sender", in.UserID).Logger()
	from, searched := "", 0
	for searched < resendLookBack {
		resp, err := in.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, resendPage)
		if err != nil {
			return "", fmt.Errorf("failed to look for an earlier attempt of %s: %w", txnID, err)
		}
		for _, evt := range resp.Chunk {
			// An encrypted room has the attempt as m.room.encrypted, with the marker in its clear part.
			sameType := evt.Type.Type == evtType.Type || evt.Type.Type == event.EventEncrypted.Type
			if evt.Sender != in.UserID || !sameType || txnMarker(evt) != txnID {
				continue
			}
			if _, err = s.db.Exec(ctx, setSendEventQuery, txnID, evt.ID); err != nil {
				return "", fmt.Errorf("failed to record the event of send %s: %w", txnID, err)
			}
			log.Info().Stringer("event_id", evt.ID).Int("searched", searched).
				Msg("An earlier attempt had sent this message; not sending it again")
			return evt.ID, nil
		}
		searched += len(resp.Chunk)
		if len(resp.Chunk) == 0 || resp.End == "" || resp.End == from {
			break
		}
		from = resp.End
	}
	log.Info().Int("searched", searched).Msg("No earlier attempt reached the homeserver; sending again")
	return "", nil
}

// prune forgets sends older than sendRetention.
func (s *sendLog) prune(ctx context.Context) error {
	if _, err := s.db.Exec(ctx, pruneSendsQuery, time.Now().Add(-sendRetention).UnixMilli()); err != nil {
		return fmt.Errorf("failed to prune old sends: %w", err)
	}
	return nil
}

func txnMarker(evt *event.Event) string {
	if v, ok := evt.Content.Raw[TxnMarkerKey].(string); ok {
		return v
	}
	var c map[string]any
	if json.Unmarshal(evt.Content.VeryRaw, &c) != nil {
		return ""
	}
	v, _ := c[TxnMarkerKey].(string)
	return v
}

var plainContent = reflect.TypeOf(map[string]any{})

// withTxnMarker returns content as a JSON object with TxnMarkerKey set, leaving the caller's content untouched.
func withTxnMarker(content any, txnID string) (map[string]any, error) {
	var m map[string]any
	if rv := reflect.ValueOf(content); rv.Kind() == reflect.Map && rv.Type().ConvertibleTo(plainContent) {
		m = maps.Clone(rv.Convert(plainContent).Interface().(map[string]any))
	} else {
		data, err := json.Marshal(content)
		if err != nil {
			return nil, fmt.Errorf("failed to encode content: %w", err)
		}
		if err = json.Unmarshal(data, &m); err != nil {
			return nil, fmt.Errorf("content is not a JSON object: %w", err)
		}
	}
	if m == nil {
		m = map[string]any{}
	}
	m[TxnMarkerKey] = txnID
	return m, nil
}
