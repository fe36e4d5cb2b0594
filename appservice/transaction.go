package appservice

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/rs/zerolog"
	"go.mau.fi/util/exhttp"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/httpguard"
)

// storedEvent is one event of a transaction, checked and ready to store.
type storedEvent struct {
	eventID id.EventID
	roomID  id.RoomID
	raw     json.RawMessage
}

// parsedTransaction is a transaction body that passed validation.
type parsedTransaction struct {
	events    []storedEvent
	ephemeral int
	digest    string
}

// badJSON is a body that is JSON but not a valid transaction.
func badJSON(format string, args ...any) error {
	return mautrix.MBadJSON.WithMessage(format, args...)
}

// parseTransaction validates a transaction body: JSON, an object, an `events` array of client-format events each with
// its required fields of the right type. Nothing of a body that fails here is stored.
func parseTransaction(body []byte) (*parsedTransaction, error) {
	if !json.Valid(body) {
		return nil, mautrix.MNotJSON.WithMessage("Transaction body is not valid JSON")
	} else if !utf8.Valid(body) {
		// encoding/json would replace the invalid bytes, storing content the homeserver never sent.
		return nil, mautrix.MNotJSON.WithMessage("Transaction body is not valid UTF-8")
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil || top == nil {
		return nil, badJSON("Transaction body must be a JSON object")
	}
	rawEvents, ok := top["events"]
	if !ok {
		return nil, badJSON("Transaction is missing the events field")
	}
	var events []json.RawMessage
	if err := json.Unmarshal(rawEvents, &events); err != nil || events == nil {
		return nil, badJSON("Transaction field events must be an array")
	}
	txn := &parsedTransaction{events: make([]storedEvent, 0, len(events))}
	digest := sha256.New()
	for i, raw := range events {
		evt, err := parseEvent(raw)
		if err != nil {
			return nil, badJSON("events[%d]: %s", i, err.Error())
		}
		txn.events = append(txn.events, *evt)
	}
	ids := make([]string, len(txn.events))
	for i, evt := range txn.events {
		ids[i] = string(evt.eventID)
	}
	// Sorted so that a homeserver that reorders a retried transaction still hits the same digest.
	slices.Sort(ids)
	for _, eventID := range ids {
		digest.Write([]byte(eventID))
		digest.Write([]byte{0})
	}
	// Ephemeral events carry no ID, so their payload stands in for one.
	for _, key := range []string{"ephemeral", "de.sorunome.msc2409.ephemeral"} {
		if raw, ok := top[key]; ok {
			var eph []json.RawMessage
			if err := json.Unmarshal(raw, &eph); err != nil {
				return nil, badJSON("Transaction field %s must be an array", key)
			}
			if key == "ephemeral" || txn.ephemeral == 0 {
				txn.ephemeral = len(eph)
			}
			digest.Write([]byte(key))
			digest.Write([]byte{0})
			digest.Write(raw)
			digest.Write([]byte{0})
		}
	}
	txn.digest = base64.RawStdEncoding.EncodeToString(digest.Sum(nil))
	return txn, nil
}

var errNotObject = errors.New("event must be a JSON object")

// requiredStrings are the string fields every client-format event carries.
var requiredStrings = []string{"event_id", "room_id", "type", "sender"}

func parseEvent(raw json.RawMessage) (*storedEvent, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil || fields == nil {
		return nil, errNotObject
	}
	values := make(map[string]string, len(requiredStrings))
	for _, name := range requiredStrings {
		value, ok := fields[name]
		if !ok {
			return nil, fmt.Errorf("missing %s", name)
		}
		var str string
		if err := json.Unmarshal(value, &str); err != nil {
			return nil, fmt.Errorf("field %s must be a string", name)
		} else if str == "" {
			return nil, fmt.Errorf("field %s is empty", name)
		}
		values[name] = str
	}
	if ts, ok := fields["origin_server_ts"]; !ok {
		return nil, errors.New("missing origin_server_ts")
	} else if _, err := strconv.ParseInt(string(ts), 10, 64); err != nil {
		return nil, errors.New("field origin_server_ts must be an integer")
	}
	if content, ok := fields["content"]; !ok {
		return nil, errors.New("missing content")
	} else if content[0] != '{' {
		return nil, errors.New("field content must be an object")
	}
	if stateKey, ok := fields["state_key"]; ok && stateKey[0] != '"' {
		return nil, errors.New("field state_key must be a string")
	}
	return &storedEvent{eventID: id.EventID(values["event_id"]), roomID: id.RoomID(values["room_id"]), raw: raw}, nil
}

// putTransaction is the durable replacement for mautrix's PutTransaction: the 200 goes out only once the transaction
// and all of its events are committed to the database.
func (as *AppService) putTransaction(w http.ResponseWriter, r *http.Request) {
	if !as.checkHSToken(w, r) {
		return
	}
	txnID := r.PathValue("txnID")
	log := zerolog.Ctx(as.ctx).With().Str("transaction_id", txnID).Logger()
	// Read as it arrives, through the limit and the listener's body budget, never sized from Content-Length.
	body, err := httpguard.ReadBody(w, r, as.maxBodyBytes)
	var refusal *httpguard.Refusal
	if errors.As(err, &refusal) {
		log.Warn().Err(err).Msg("Refused transaction body")
		refusal.Write(w, r)
		return
	} else if err != nil {
		mautrix.MNotJSON.WithMessage("Failed to read transaction body").Write(w)
		return
	}
	txn, err := parseTransaction(body)
	if err != nil {
		log.Warn().Err(err).Msg("Rejected malformed transaction")
		var respErr mautrix.RespError
		if errors.As(err, &respErr) {
			respErr.Write(w)
		} else {
			mautrix.MBadJSON.WithMessage("%s", err.Error()).Write(w)
		}
		return
	}
	if err = as.handleExtensions(log.WithContext(as.ctx), body); err != nil {
		log.Warn().Err(err).Msg("Rejected transaction extensions")
		mautrix.MBadJSON.WithMessage("%s", err.Error()).Write(w)
		return
	}
	// The request context is not used: a homeserver that hangs up mid-commit must not leave half a transaction.
	res, err := as.inbox.store(log.WithContext(as.ctx), txnID, txn)
	if database.IsFull(err) {
		// Not acknowledged, so the homeserver keeps the transaction and sends it again; only the operator can end it.
		log.Error().Err(err).Msg("Failed to store transaction: the database is full (free disk space)")
		mautrix.MUnknown.WithStatus(http.StatusServiceUnavailable).
			WithMessage("Failed to store transaction: the database is full; send it again later").Write(w)
		return
	} else if err != nil {
		log.Err(err).Msg("Failed to store transaction")
		mautrix.MUnknown.WithMessage("Failed to store transaction").Write(w)
		return
	}
	exhttp.WriteEmptyJSONResponse(w, http.StatusOK)
	if res.duplicate {
		log.Debug().Msg("Ignored repeated transaction")
		return
	}
	log.Debug().
		Int("events", len(txn.events)).
		Int("new_events", res.newEvents).
		Int("ephemeral", txn.ephemeral).
		Msg("Stored transaction")
	for _, roomID := range res.rooms {
		as.dispatcher.notify(roomID)
	}
}
