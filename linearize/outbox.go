package linearize

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/linearize/federation"
)

// maxPDUsPerTxn is the draft's cap on PDUs in one /send transaction (§12.5.1).
const maxPDUsPerTxn = 50

// maxLPDUsPerTxn caps the LPDUs in one transaction to a hub, well below maxPDUsPerTxn. A hub completes and appends a
// transaction's LPDUs one after another and fans them out as one batch, so every LPDU of a big transaction waits for
// all of them, and for the other senders' transactions queued before it: at saturation, 50-LPDU transactions from
// three participants kept events 25-40 ms inside the hub before their fan-out began. Smaller transactions cost the
// hub more commits and requests per event; 20 was the best trade measured (docs/BENCHMARKS.md, issue 4).
const maxLPDUsPerTxn = 20

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
	// sentTxns and sentItems count the transactions sent and what they carried, for the benchmarks.
	sentTxns, sentItems atomic.Int64
	// backlog counts, per destination, the PDUs queued as hub since this start and not yet sent; drained is closed
	// (and replaced) whenever a backlog shrinks. Rows left from before a restart are not counted: the pacing is
	// approximate, and the outbox itself relies only on lm_outbox.
	backlog map[string]int
	drained chan struct{}
	// queuedUpTo is, per destination, the last seq given to it by a commit of this process; acked holds the last
	// seq of a destination's transaction that succeeded and whose end (rows deleted, mark cleared) is not yet
	// written (see deferEnd). Both are guarded by lock.
	queuedUpTo map[string]int64
	acked      map[string]int64
	// departedRetries is the bound of the const departedRetries, held here so that tests can lower it.
	departedRetries atomic.Int32
}

func newOutbox(e *Engine) *outbox {
	o := &outbox{e: e, workers: make(map[string]chan struct{}), failing: make(map[string]bool),
		backlog: make(map[string]int), drained: make(chan struct{}), queuedUpTo: make(map[string]int64),
		acked: make(map[string]int64)}
	o.departedRetries.Store(departedRetries)
	return o
}

// Ending a transaction takes a commit of its own (its rows deleted, the destination's mark cleared or moved to the
// next transaction). When nothing was queued behind it, that commit is deferred: the next commit that queues rows
// for the destination writes it (commitBatch, through ackedFor and forgetAcked), or the worker does after
// ackFlushDelay. Until then the transaction
// stays marked in flight, so a crash resends it under the same txnId, which the receiver answers from its record.
const ackFlushDelay = 200 * time.Millisecond

// queuedTo records, after a commit, the last seq it gave each destination.
func (o *outbox) queuedTo(woken map[string]int64) {
	o.lock.Lock()
	defer o.lock.Unlock()
	for d, seq := range woken {
		o.queuedUpTo[d] = max(o.queuedUpTo[d], seq)
	}
}

// deferEnd records destination's transaction ending at last as succeeded, with its end left for later, and reports
// whether it could: only when this process knows nothing was queued behind it.
func (o *outbox) deferEnd(destination string, last int64) bool {
	o.lock.Lock()
	defer o.lock.Unlock()
	if upTo, known := o.queuedUpTo[destination]; !known || upTo > last {
		return false
	}
	o.acked[destination] = last
	return true
}

// takeAcked removes and returns destination's deferred end.
func (o *outbox) takeAcked(destination string) (int64, bool) {
	o.lock.Lock()
	defer o.lock.Unlock()
	last, ok := o.acked[destination]
	delete(o.acked, destination)
	return last, ok
}

// ackedFor returns the deferred ends of the destinations, for a commit to write.
func (o *outbox) ackedFor(woken map[string]int64) map[string]int64 {
	o.lock.Lock()
	defer o.lock.Unlock()
	var out map[string]int64
	for d := range woken {
		if last, ok := o.acked[d]; ok {
			if out == nil {
				out = make(map[string]int64)
			}
			out[d] = last
		}
	}
	return out
}

// forgetAcked drops deferred ends that a commit wrote, unless a newer one replaced them meanwhile.
func (o *outbox) forgetAcked(written map[string]int64) {
	o.lock.Lock()
	defer o.lock.Unlock()
	for d, last := range written {
		if o.acked[d] == last {
			delete(o.acked, d)
		}
	}
}

// queued records n PDUs queued for destination as hub.
func (o *outbox) queued(destination string, n int) {
	o.lock.Lock()
	o.backlog[destination] += n
	o.lock.Unlock()
}

// sent records n PDUs of destination's backlog sent.
func (o *outbox) sent(destination string, n int) {
	if n == 0 {
		return
	}
	o.lock.Lock()
	o.backlog[destination] = max(o.backlog[destination]-n, 0)
	close(o.drained)
	o.drained = make(chan struct{})
	o.lock.Unlock()
}

// Pacing: a hub that answered every /send at once would take LPDUs faster than it can fan them out whenever its
// senders outpace its slowest destination, and every event would then wait in an outbox queue that only grows. So
// the answer to a transaction that appended LPDUs waits while a healthy destination has more than backlogLimit
// PDUs queued (half a transaction besides the one in flight: with 50 the figures of BenchmarkHubFanout were worse):
// the sender, which may have one transaction in flight, holds its next LPDUs until the hub can carry them. Failing
// destinations do not count (their rows wait for them), and the wait is bounded, so a stuck destination cannot
// stall the room.
const (
	backlogLimit   = maxPDUsPerTxn / 2
	backlogMaxWait = 2 * time.Second
)

// waitForBacklog returns once none of dests that is healthy has more than backlogLimit PDUs queued, after
// backlogMaxWait, or when ctx ends. Only the destinations the sender's events went to count: a slow server in one
// room does not slow the senders of another.
func (o *outbox) waitForBacklog(ctx context.Context, dests map[string]int) {
	var timeout <-chan time.Time
	for {
		o.lock.Lock()
		over := false
		for d := range dests {
			if o.backlog[d] > backlogLimit && !o.failing[d] {
				over = true
				break
			}
		}
		drained := o.drained
		o.lock.Unlock()
		if !over {
			return
		}
		if timeout == nil {
			timer := time.NewTimer(backlogMaxWait)
			defer timer.Stop()
			timeout = timer.C
		}
		select {
		case <-drained:
		case <-timeout:
			return
		case <-ctx.Done():
			return
		}
	}
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
	defer func() {
		// On the way out, write a deferred end rather than leave the transaction to be sent again after the restart.
		if last, ok := o.takeAcked(destination); ok {
			if _, err := o.endTransaction(context.WithoutCancel(ctx), destination, last); err != nil {
				log.Warn().Err(err).Msg("Failed to end the last transaction before stopping")
			}
		}
	}()
	var next []outboxItem
	for {
		var wait time.Duration
		var err error
		wait, next, err = o.sendOnce(ctx, destination, next)
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

// sendOnce sends one transaction to destination. It returns how long to wait before the next attempt (0 for at once)
// and, when the commit that ended this transaction also marked the next one in flight, that transaction's items.
func (o *outbox) sendOnce(ctx context.Context, destination string, prepared []outboxItem) (time.Duration, []outboxItem, error) {
	st := o.e.store
	items := prepared
	if items == nil {
		if last, ok := o.takeAcked(destination); ok {
			// The deferred end of the last transaction, with the next one marked in the same commit.
			next, err := o.endTransaction(ctx, destination, last)
			if err != nil {
				o.lock.Lock()
				if _, newer := o.acked[destination]; !newer {
					o.acked[destination] = last
				}
				o.lock.Unlock()
				return minBackoff, nil, err
			}
			if len(next) == 0 {
				return idleWait, nil, nil
			}
			items = next
		}
	}
	if items == nil {
		var wait time.Duration
		var err error
		items, wait, err = o.nextBatch(ctx, destination)
		if err != nil || items == nil {
			return wait, nil, err
		}
	}
	last := items[len(items)-1].seq
	txnID := txnIDOf(items)
	pdus := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		pdus = append(pdus, it.body)
	}
	o.sentTxns.Add(1)
	o.sentItems.Add(int64(len(items)))
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
		// The transaction stays marked in flight (persisted before it was first sent), so the retry reuses its txnId.
		ds, err := st.getDest(ctx, destination)
		if err != nil {
			return minBackoff, nil, err
		}
		ds.retryCount++
		if ds.retryCount >= int(o.departedRetries.Load()) {
			if dropped, err := o.dropIfDeparted(ctx, destination, sendErr); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to drop the outbox of a departed server")
			} else if dropped {
				return idleWait, nil, nil
			}
		}
		backoff := minBackoff << min(ds.retryCount-1, 20)
		backoff = min(backoff, maxBackoff)
		ds.nextAttempt = time.Now().Add(backoff).UnixMilli()
		if err = st.putDest(ctx, destination, ds, sendErr.Error()); err != nil {
			return backoff, nil, err
		}
		return backoff, nil, fmt.Errorf("failed to send transaction %s: %w", txnID, sendErr)
	}
	hubPDUs := 0
	for _, it := range items {
		if it.held {
			o.e.fanout.release(it.eventID)
		}
		if !it.isLPDU {
			hubPDUs++
		}
	}
	o.sent(destination, hubPDUs)
	// The listeners hear of refused LPDUs before the transaction's end is written: a crash in between sends the
	// transaction again, its receiver answers from its record, and they hear it again rather than never.
	o.e.handleSendResponse(ctx, destination, items, resp)
	if o.deferEnd(destination, last) {
		return ackFlushDelay, nil, nil
	}
	next, err := o.endTransaction(ctx, destination, last)
	if err != nil {
		return minBackoff, nil, err
	}
	if len(next) == 0 {
		// Rows added since the commit have woken the worker (the signal is buffered).
		return idleWait, nil, nil
	}
	return 0, next, nil
}

// endTransaction ends destination's transaction up to last and marks the next one, made of what accumulated
// meanwhile, in flight, in one commit: a commit per transaction instead of two, and no read before sending it.
func (o *outbox) endTransaction(ctx context.Context, destination string, last int64) ([]outboxItem, error) {
	st := o.e.store
	var next []outboxItem
	err := st.write(ctx, func(ctx context.Context) error {
		if err := st.deleteOutbox(ctx, destination, last); err != nil {
			return err
		}
		var err error
		next, err = st.outboxBatch(ctx, destination, 1<<62-1, maxPDUsPerTxn, o.e.fanout)
		if err != nil {
			return err
		}
		ds := destState{sentUpTo: last}
		if len(next) > 0 {
			ds.txnLastSeq = next[len(next)-1].seq
		}
		return st.putDest(ctx, destination, ds, "")
	})
	return next, err
}

// nextBatch reads the transaction to send next: the one marked in flight (a retry, or one marked by the commit that
// ended the last), or a fresh batch, marked in flight before it is sent. It returns nil items and how long to wait
// when there is nothing to send now.
func (o *outbox) nextBatch(ctx context.Context, destination string) ([]outboxItem, time.Duration, error) {
	st := o.e.store
	ds, err := st.getDest(ctx, destination)
	if err != nil {
		return nil, minBackoff, err
	}
	if now := time.Now().UnixMilli(); ds.nextAttempt > now {
		return nil, time.Duration(ds.nextAttempt-now) * time.Millisecond, nil
	}
	maxSeq := ds.txnLastSeq
	resuming := maxSeq > 0
	if !resuming {
		maxSeq = 1<<62 - 1
	}
	items, err := st.outboxBatch(ctx, destination, maxSeq, maxPDUsPerTxn, o.e.fanout)
	if err != nil {
		return nil, minBackoff, err
	}
	if len(items) == 0 {
		if resuming {
			ds.txnLastSeq = 0
			if err = st.putDest(ctx, destination, ds, ""); err != nil {
				return nil, minBackoff, err
			}
			return nil, 0, nil
		}
		return nil, idleWait, nil
	}
	if !resuming {
		ds.txnLastSeq = items[len(items)-1].seq
		if err = st.putDest(ctx, destination, ds, ""); err != nil {
			return nil, minBackoff, err
		}
	}
	return items, 0, nil
}

// txnIDOf names a transaction: its first and last seq, for the logs, and a hash of the IDs of what it carries, which
// is what makes the name unique. A peer answers a txnId it has seen from its record (for pruneRetention), whatever
// the transaction holds now, so an ID given again to other content loses that content. Seqs alone are not enough,
// even kept across restarts: a database restored from a backup gives the seqs used since the backup again, to other
// events. A random nonce kept with the in-flight mark would not be either: the transaction is read again from the
// rows at each retry, and the same mark can make another batch (a backup restored between two marks, a build with
// other batch limits). A hash of the event IDs is a function of exactly what is sent: the same rows, resent after a
// crash, make the same transaction under the same ID, which the peer answers from its record (the deferred end
// relies on it); other content gets another ID, short of a SHA-256 collision. Event IDs are enough, for they are
// reference hashes of the events (LPDU IDs of the LPDUs), so they fix the bodies sent.
func txnIDOf(items []outboxItem) string {
	h := sha256.New()
	for _, it := range items {
		h.Write([]byte(it.eventID))
		// Event IDs hold no NUL, so the list reads back one way only.
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return strconv.FormatInt(items[0].seq, 10) + "-" + strconv.FormatInt(items[len(items)-1].seq, 10) + "-" +
		hex.EncodeToString(sum[:16])
}

// departedRetries is how many failed attempts in a row a destination gets while no user of it is joined to any room
// it has rows queued for; then they are dropped. Fan-out goes to the servers with joined users, and to a server in
// the event that removes its last one, so nothing is queued for such a server after its rows: without a bound, a
// server that left and went away would be retried at maxBackoff forever. The bound lets a departed server that is
// only down for a while (about three and a half minutes of backoff) still receive the leave or kick that removed it.
const departedRetries = 10

// dropIfDeparted drops everything queued for destination when it is a departed server: every row is a PDU we fan
// out as hub, and no user of destination is joined to the room of any of them. It reports whether it dropped. The
// check and the delete are one write: a join of destination commits before (and is seen) or after (and its rows stay).
func (o *outbox) dropIfDeparted(ctx context.Context, destination string, cause error) (bool, error) {
	st := o.e.store
	var dropped []string
	err := st.write(ctx, func(ctx context.Context) error {
		dropped = nil
		rooms, lpdus, err := st.outboxRooms(ctx, destination)
		if err != nil || lpdus {
			// Our LPDUs wait for their hub however long it takes.
			return err
		}
		for _, roomID := range rooms {
			if joined, err := st.serverJoined(ctx, roomID, destination); err != nil || joined {
				return err
			}
		}
		var last int64
		if dropped, last, err = st.outboxEventIDs(ctx, destination); err != nil {
			return err
		}
		if err = st.deleteOutbox(ctx, destination, last); err != nil {
			return err
		}
		return st.putDest(ctx, destination, destState{sentUpTo: last}, fmt.Sprintf(
			"dropped %d events after %d failed attempts, no user of the server being joined any more: %v",
			len(dropped), o.departedRetries.Load(), cause))
	})
	if err != nil || len(dropped) == 0 {
		return false, err
	}
	for _, id := range dropped {
		o.e.fanout.release(id)
	}
	o.lock.Lock()
	delete(o.failing, destination)
	o.lock.Unlock()
	o.sent(destination, len(dropped))
	zerolog.Ctx(ctx).Warn().Err(cause).Int("events", len(dropped)).Int32("attempts", o.departedRetries.Load()).
		Msg("No user of the server is joined any more and it keeps failing, dropping what was queued for it")
	return true, nil
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
		for _, nl := range e.listeners {
			nl.l.OnLPDUFailed(ctx, it.roomID, it.eventID, failed.Error)
		}
	}
}
