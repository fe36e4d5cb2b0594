package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// maxPDUsPerTxn is the draft's cap on PDUs in one /send transaction (§12.5.1).
const maxPDUsPerTxn = 50

const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Minute
)

// outbox sends queued PDUs (as hub) and LPDUs (as participant) to each destination in seq order, one transaction in
// flight per destination. Everything it sends was written to lm_outbox in the same database transaction as the log
// row, so a restart resumes where it stopped; the in-flight transaction's last seq is persisted first, so a retry
// reuses its txnId and the receiver's deduplication applies.
type outbox struct {
	e       *Engine
	lock    sync.Mutex
	workers map[string]chan struct{}
	// failing holds destinations whose last send failed, so resetBackoff costs nothing for healthy ones.
	failing map[string]bool
	wg      sync.WaitGroup
	ctx     context.Context
}

func newOutbox(e *Engine) *outbox {
	return &outbox{e: e, workers: make(map[string]chan struct{}), failing: make(map[string]bool)}
}

func (o *outbox) start(ctx context.Context) error {
	o.ctx = ctx
	// A restart is a fresh start for every destination's backoff.
	if _, err := o.e.store.exec(ctx, resetBackoffQuery, "", int64(0)); err != nil {
		return fmt.Errorf("failed to reset backoff: %w", err)
	}
	dests, err := o.e.store.outboxDestinations(ctx)
	if err != nil {
		return err
	}
	for _, d := range dests {
		o.wake(d)
	}
	return nil
}

func (o *outbox) stop() {
	o.wg.Wait()
}

// wake starts the worker of a destination, or tells the running one that there is more to send.
func (o *outbox) wake(destination string) {
	o.lock.Lock()
	defer o.lock.Unlock()
	if o.ctx == nil {
		return
	}
	ch, ok := o.workers[destination]
	if !ok {
		ch = make(chan struct{}, 1)
		o.workers[destination] = ch
		o.wg.Add(1)
		go o.run(destination, ch)
	}
	select {
	case ch <- struct{}{}:
	default:
	}
}

// resetBackoff makes destination due now: it has just shown it is up (it sent us a request), or we restarted.
func (o *outbox) resetBackoff(ctx context.Context, destination string) {
	o.lock.Lock()
	failing := o.failing[destination]
	delete(o.failing, destination)
	o.lock.Unlock()
	if !failing {
		return
	}
	res, err := o.e.store.exec(ctx, resetBackoffQuery, destination, time.Now().UnixMilli())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("destination", destination).Msg("Failed to reset backoff")
		return
	}
	if n, _ := res.RowsAffected(); n > 0 {
		o.wake(destination)
	}
}

const resetBackoffQuery = `UPDATE lm_destination SET next_attempt=0, retry_count=0 WHERE ($1='' OR destination=$1) AND next_attempt>$2`

func (o *outbox) run(destination string, wake chan struct{}) {
	defer o.wg.Done()
	ctx := o.ctx
	log := zerolog.Ctx(ctx).With().Str("destination", destination).Logger()
	ctx = log.WithContext(ctx)
	for {
		wait, err := o.sendOnce(ctx, destination)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			log.Warn().Err(err).Dur("retry_in", wait).Msg("Failed to send transaction")
		}
		if wait == 0 {
			continue
		}
		timer := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			timer.Stop()
			return
		case <-wake:
			// sendOnce honours the persisted next attempt, so new rows do not cut a backoff short; a reset does.
			timer.Stop()
		case <-timer.C:
		}
	}
}

// idleWait is how long an idle worker sleeps when nothing wakes it; rows written by another process are picked up
// then.
const idleWait = 30 * time.Second

// sendOnce sends one transaction to destination. It returns how long to wait before the next attempt (0 for at once).
func (o *outbox) sendOnce(ctx context.Context, destination string) (time.Duration, error) {
	st := o.e.store
	ds, err := st.getDest(ctx, destination)
	if err != nil {
		return minBackoff, err
	}
	if now := time.Now().UnixMilli(); ds.nextAttempt > now {
		return time.Duration(ds.nextAttempt-now) * time.Millisecond, nil
	}
	maxSeq := ds.txnLastSeq
	resuming := maxSeq > 0
	if !resuming {
		maxSeq = 1<<62 - 1
	}
	items, err := st.outboxBatch(ctx, destination, maxSeq, maxPDUsPerTxn)
	if err != nil {
		return minBackoff, err
	}
	if len(items) == 0 {
		if resuming {
			ds.txnLastSeq = 0
			if err = st.putDest(ctx, destination, ds, ""); err != nil {
				return minBackoff, err
			}
			return 0, nil
		}
		return idleWait, nil
	}
	last := items[len(items)-1].seq
	if !resuming {
		ds.txnLastSeq = last
		if err = st.putDest(ctx, destination, ds, ""); err != nil {
			return minBackoff, err
		}
	}
	txnID := strconv.FormatInt(items[0].seq, 10) + "-" + strconv.FormatInt(last, 10)
	pdus := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		pdus = append(pdus, it.body)
	}
	var resp *federation.SendResponse
	var sendErr error
	if cs, ok := o.e.remote.(canonicalSender); ok {
		// Every body in lm_outbox and lm_event was written from PDU.Canonical.
		resp, sendErr = cs.SendCanonicalTransaction(ctx, destination, txnID, pdus)
	} else {
		resp, sendErr = o.e.remote.SendTransaction(ctx, destination, txnID, &federation.Transaction{PDUs: pdus})
	}
	if refusedForGood(sendErr) {
		// The destination will never take this transaction as it is: drop it rather than block everything behind it,
		// and tell the listeners about our LPDUs in it.
		zerolog.Ctx(ctx).Error().Err(sendErr).Str("txn_id", txnID).Int("pdus", len(items)).
			Msg("Destination refused a transaction for good, dropping it")
		resp = &federation.SendResponse{FailedPDUs: make(map[string]federation.FailedPDU, len(items))}
		for _, it := range items {
			resp.FailedPDUs[it.eventID] = federation.FailedPDU{Error: sendErr.Error()}
		}
		sendErr = nil
	}
	o.lock.Lock()
	if sendErr != nil {
		o.failing[destination] = true
	} else {
		delete(o.failing, destination)
	}
	o.lock.Unlock()
	if sendErr != nil {
		ds.retryCount++
		backoff := minBackoff << min(ds.retryCount-1, 20)
		backoff = min(backoff, maxBackoff)
		ds.nextAttempt = time.Now().Add(backoff).UnixMilli()
		if err = st.putDest(ctx, destination, ds, sendErr.Error()); err != nil {
			return backoff, err
		}
		return backoff, fmt.Errorf("failed to send transaction %s: %w", txnID, sendErr)
	}
	err = o.e.store.write(ctx, func(ctx context.Context) error {
		if err := st.deleteOutbox(ctx, destination, last); err != nil {
			return err
		}
		return st.putDest(ctx, destination, destState{}, "")
	})
	if err != nil {
		return minBackoff, err
	}
	o.e.handleSendResponse(ctx, destination, items, resp)
	if !resuming && len(items) < maxPDUsPerTxn {
		// A short fresh batch emptied the queue as it was; rows added since have woken the worker (the signal is
		// buffered). A resumed batch was cut at its old end, so more may wait behind it.
		return idleWait, nil
	}
	return 0, nil
}

// canonicalSender is a Remote that can send PDUs already in canonical JSON without re-encoding them
// (federation.Client).
type canonicalSender interface {
	SendCanonicalTransaction(ctx context.Context, destination, txnID string, pdus []json.RawMessage) (*federation.SendResponse, error)
}

var _ canonicalSender = (*federation.Client)(nil)

// refusedForGood reports whether an error says the transaction's content is unacceptable (malformed or too large),
// so retrying the same transaction cannot succeed. Authentication, rate limits and a transaction in flight are
// transient.
func refusedForGood(err error) bool {
	var fe *federation.Error
	if !errors.As(err, &fe) {
		return false
	}
	switch fe.ErrCode {
	case federation.ErrCodeBadJSON, federation.ErrCodeNotJSON, federation.ErrCodeTooLarge:
		return fe.Status >= 400 && fe.Status < 500
	}
	return false
}

// handleSendResponse reports the hub's failed_pdus for our LPDUs to the listeners.
func (e *Engine) handleSendResponse(ctx context.Context, destination string, items []outboxItem, resp *federation.SendResponse) {
	if resp == nil || len(resp.FailedPDUs) == 0 {
		return
	}
	log := zerolog.Ctx(ctx)
	for _, it := range items {
		failed, ok := resp.FailedPDUs[it.eventID]
		if !ok {
			continue
		}
		log.Warn().Str("event_id", it.eventID).Str("room_id", it.roomID).Str("error", failed.Error).
			Msg("Remote server refused an event")
		if !it.isLPDU {
			continue
		}
		e.sentLPDUs.Delete(it.eventID)
		if _, err := e.store.removePendingLPDU(ctx, it.eventID); err != nil {
			log.Err(err).Msg("Failed to forget refused LPDU")
		}
		for _, nl := range e.listeners {
			nl.l.OnLPDUFailed(ctx, it.roomID, it.eventID, failed.Error)
		}
	}
}
