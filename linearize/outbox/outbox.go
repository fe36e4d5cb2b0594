// Package outbox sends what the engine queued in lm_outbox: as hub, the PDUs it fans out to every server in a room;
// as participant, its LPDUs to the hub. One transaction is in flight per destination, in seq order, retried with
// backoff under the same txnId; a hub's answers to its senders are paced by the backlog here (WaitForBacklog).
package outbox

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
	"github.com/lmbridge/lmbridge/linearize/store"
)

// MaxPDUsPerTxn is the draft's cap on PDUs in one /send transaction (§12.5.1).
const MaxPDUsPerTxn = 50

// MaxLPDUsPerTxn caps the LPDUs in one transaction to a hub, well below MaxPDUsPerTxn. A hub completes and appends a
// transaction's LPDUs one after another and fans them out as one batch, so every LPDU of a big transaction waits for
// all of them, and for the other senders' transactions queued before it: at saturation, 50-LPDU transactions from
// three participants kept events 25-40 ms inside the hub before their fan-out began. Smaller transactions cost the
// hub more commits and requests per event; 20 was the best trade measured (docs/BENCHMARKS.md, issue 4).
const MaxLPDUsPerTxn = 20

const (
	minBackoff = 200 * time.Millisecond
	maxBackoff = 5 * time.Minute
)

// Outbox sends queued PDUs (as hub) and LPDUs (as participant) to each destination in seq order, one transaction in
// flight per destination. Everything it sends was written to lm_outbox in the same database transaction as the log
// row, so a restart resumes where it stopped; the in-flight transaction's last seq is persisted first, so a retry
// reuses its txnId and the receiver's deduplication applies.
type Outbox struct {
	store   *store.Store
	sender  Sender
	bodies  *Bodies
	failed  func(ctx context.Context, roomID, lpduID, reason string)
	lock    sync.Mutex
	workers map[string]chan struct{}
	// failing holds destinations whose last send failed, so ResetBackoff costs nothing for healthy ones.
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

// Sender sends transactions to other servers: *federation.Client.
type Sender interface {
	SendTransaction(ctx context.Context, destination, txnID string, txn *federation.Transaction) (*federation.SendResponse, error)
}

// Config is what an Outbox works with.
type Config struct {
	// Store holds the rows to send; the engine writes them in the same transaction as its log rows.
	Store *store.Store
	// Sender sends the transactions; one that also implements SendCanonicalTransaction is given the bodies as stored.
	Sender Sender
	// Bodies holds the PDUs fanned out as hub, which are then not read back from the log.
	Bodies *Bodies
	// LPDUFailed is told of each LPDU of ours that its hub refused (failed_pdus, or a transaction refused for good).
	LPDUFailed func(ctx context.Context, roomID, lpduID, reason string)
}

// New returns an Outbox; Start starts sending.
func New(cfg Config) *Outbox {
	o := &Outbox{store: cfg.Store, sender: cfg.Sender, bodies: cfg.Bodies, failed: cfg.LPDUFailed,
		workers: make(map[string]chan struct{}), failing: make(map[string]bool),
		backlog: make(map[string]int), drained: make(chan struct{}), queuedUpTo: make(map[string]int64),
		acked: make(map[string]int64)}
	o.departedRetries.Store(departedRetries)
	return o
}

// SentTxns counts the transactions sent, for the benchmarks.
func (o *Outbox) SentTxns() int64 {
	return o.sentTxns.Load()
}

// SentItems counts the PDUs and LPDUs the transactions sent carried, for the benchmarks.
func (o *Outbox) SentItems() int64 {
	return o.sentItems.Load()
}

// SetDepartedRetries lowers (for tests) how many failed attempts a departed server gets; see departedRetries.
func (o *Outbox) SetDepartedRetries(n int32) {
	o.departedRetries.Store(n)
}

// DeferredEnds counts the transactions that succeeded with their end not written yet (see deferEnd), for tests.
func (o *Outbox) DeferredEnds() int {
	o.lock.Lock()
	defer o.lock.Unlock()
	return len(o.acked)
}

// ForgetDeferredEnds drops the deferred ends, as a crash before they are written would, for tests.
func (o *Outbox) ForgetDeferredEnds() {
	o.lock.Lock()
	defer o.lock.Unlock()
	clear(o.acked)
}

// Ending a transaction takes a commit of its own (its rows deleted, the destination's mark cleared or moved to the
// next transaction). When nothing was queued behind it, that commit is deferred: the next commit that queues rows
// for the destination writes it (the engine's commit, through AckedFor and ForgetAcked), or the worker does after
// AckFlushDelay. Until then the transaction stays marked in flight, so a crash resends it under the same txnId, which the receiver answers from its record.
const AckFlushDelay = 200 * time.Millisecond

// QueuedTo records, after a commit, the last seq it gave each destination.
func (o *Outbox) QueuedTo(woken map[string]int64) {
	o.lock.Lock()
	defer o.lock.Unlock()
	for d, seq := range woken {
		o.queuedUpTo[d] = max(o.queuedUpTo[d], seq)
	}
}

// deferEnd records destination's transaction ending at last as succeeded, with its end left for later, and reports
// whether it could: only when this process knows nothing was queued behind it.
func (o *Outbox) deferEnd(destination string, last int64) bool {
	o.lock.Lock()
	defer o.lock.Unlock()
	if upTo, known := o.queuedUpTo[destination]; !known || upTo > last {
		return false
	}
	o.acked[destination] = last
	return true
}

// takeAcked removes and returns destination's deferred end.
func (o *Outbox) takeAcked(destination string) (int64, bool) {
	o.lock.Lock()
	defer o.lock.Unlock()
	last, ok := o.acked[destination]
	delete(o.acked, destination)
	return last, ok
}

// AckedFor returns the deferred ends of the destinations, for a commit to write.
func (o *Outbox) AckedFor(woken map[string]int64) map[string]int64 {
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

// ForgetAcked drops deferred ends that a commit wrote, unless a newer one replaced them meanwhile.
func (o *Outbox) ForgetAcked(written map[string]int64) {
	o.lock.Lock()
	defer o.lock.Unlock()
	for d, last := range written {
		if o.acked[d] == last {
			delete(o.acked, d)
		}
	}
}

// Queued records n PDUs queued for destination as hub.
func (o *Outbox) Queued(destination string, n int) {
	o.lock.Lock()
	o.backlog[destination] += n
	o.lock.Unlock()
}

// sent records n PDUs of destination's backlog sent.
func (o *Outbox) sent(destination string, n int) {
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
	backlogLimit   = MaxPDUsPerTxn / 2
	backlogMaxWait = 2 * time.Second
)

// WaitForBacklog returns once none of dests that is healthy has more than backlogLimit PDUs queued, after
// backlogMaxWait, or when ctx ends. Only the destinations the sender's events went to count: a slow server in one
// room does not slow the senders of another.
func (o *Outbox) WaitForBacklog(ctx context.Context, dests map[string]int) {
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

func (o *Outbox) Start(ctx context.Context) error {
	o.ctx = ctx
	// A restart is a fresh start for every destination's backoff.
	if _, err := o.store.ResetBackoff(ctx, "", 0); err != nil {
		return err
	}
	dests, err := o.store.OutboxDestinations(ctx)
	if err != nil {
		return err
	}
	for _, d := range dests {
		o.Wake(d)
	}
	return nil
}

func (o *Outbox) Stop() {
	o.wg.Wait()
}

// Wake starts the worker of a destination, or tells the running one that there is more to send.
func (o *Outbox) Wake(destination string) {
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

// ResetBackoff makes destination due now: it has just shown it is up (it sent us a request), or we restarted.
func (o *Outbox) ResetBackoff(ctx context.Context, destination string) {
	o.lock.Lock()
	failing := o.failing[destination]
	delete(o.failing, destination)
	o.lock.Unlock()
	if !failing {
		return
	}
	changed, err := o.store.ResetBackoff(ctx, destination, time.Now().UnixMilli())
	if err != nil {
		zerolog.Ctx(ctx).Warn().Err(err).Str("destination", destination).Msg("Failed to reset backoff")
		return
	}
	if changed {
		o.Wake(destination)
	}
}

func (o *Outbox) run(destination string, wake chan struct{}) {
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
	var next []store.OutboxItem
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
func (o *Outbox) sendOnce(ctx context.Context, destination string, prepared []store.OutboxItem) (time.Duration, []store.OutboxItem, error) {
	st := o.store
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
	last := items[len(items)-1].Seq
	txnID := txnIDOf(items)
	pdus := make([]json.RawMessage, 0, len(items))
	for _, it := range items {
		pdus = append(pdus, it.Body)
	}
	o.sentTxns.Add(1)
	o.sentItems.Add(int64(len(items)))
	var resp *federation.SendResponse
	var sendErr error
	if cs, ok := o.sender.(canonicalSender); ok {
		// Every body in lm_outbox and lm_event was written from PDU.Canonical.
		resp, sendErr = cs.SendCanonicalTransaction(ctx, destination, txnID, pdus)
	} else {
		resp, sendErr = o.sender.SendTransaction(ctx, destination, txnID, &federation.Transaction{PDUs: pdus})
	}
	if refusedForGood(sendErr) {
		// The destination will never take this transaction as it is: drop it rather than block everything behind it,
		// and tell the listeners about our LPDUs in it.
		zerolog.Ctx(ctx).Error().Err(sendErr).Str("txn_id", txnID).Int("pdus", len(items)).
			Msg("Destination refused a transaction for good, dropping it")
		resp = &federation.SendResponse{FailedPDUs: make(map[string]federation.FailedPDU, len(items))}
		for _, it := range items {
			resp.FailedPDUs[it.EventID] = federation.FailedPDU{Error: sendErr.Error()}
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
		ds, err := st.GetDest(ctx, destination)
		if err != nil {
			return minBackoff, nil, err
		}
		ds.RetryCount++
		if ds.RetryCount >= int(o.departedRetries.Load()) {
			if dropped, err := o.dropIfDeparted(ctx, destination, sendErr); err != nil {
				zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to drop the outbox of a departed server")
			} else if dropped {
				return idleWait, nil, nil
			}
		}
		backoff := minBackoff << min(ds.RetryCount-1, 20)
		backoff = min(backoff, maxBackoff)
		ds.NextAttempt = time.Now().Add(backoff).UnixMilli()
		if err = st.PutDest(ctx, destination, ds, sendErr.Error()); err != nil {
			return backoff, nil, err
		}
		return backoff, nil, fmt.Errorf("failed to send transaction %s: %w", txnID, sendErr)
	}
	hubPDUs := 0
	for _, it := range items {
		if it.Held {
			o.bodies.Release(it.EventID)
		}
		if !it.IsLPDU {
			hubPDUs++
		}
	}
	o.sent(destination, hubPDUs)
	// The listeners hear of refused LPDUs before the transaction's end is written: a crash in between sends the
	// transaction again, its receiver answers from its record, and they hear it again rather than never.
	o.handleSendResponse(ctx, items, resp)
	if o.deferEnd(destination, last) {
		return AckFlushDelay, nil, nil
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
func (o *Outbox) endTransaction(ctx context.Context, destination string, last int64) ([]store.OutboxItem, error) {
	st := o.store
	var next []store.OutboxItem
	err := st.Write(ctx, func(ctx context.Context) error {
		if err := st.DeleteOutbox(ctx, destination, last); err != nil {
			return err
		}
		var err error
		next, err = st.OutboxBatch(ctx, destination, 1<<62-1, MaxPDUsPerTxn, MaxLPDUsPerTxn, o.bodies)
		if err != nil {
			return err
		}
		ds := store.Dest{SentUpTo: last}
		if len(next) > 0 {
			ds.TxnLastSeq = next[len(next)-1].Seq
		}
		return st.PutDest(ctx, destination, ds, "")
	})
	return next, err
}

// nextBatch reads the transaction to send next: the one marked in flight (a retry, or one marked by the commit that
// ended the last), or a fresh batch, marked in flight before it is sent. It returns nil items and how long to wait
// when there is nothing to send now.
func (o *Outbox) nextBatch(ctx context.Context, destination string) ([]store.OutboxItem, time.Duration, error) {
	st := o.store
	ds, err := st.GetDest(ctx, destination)
	if err != nil {
		return nil, minBackoff, err
	}
	if now := time.Now().UnixMilli(); ds.NextAttempt > now {
		return nil, time.Duration(ds.NextAttempt-now) * time.Millisecond, nil
	}
	maxSeq := ds.TxnLastSeq
	resuming := maxSeq > 0
	if !resuming {
		maxSeq = 1<<62 - 1
	}
	items, err := st.OutboxBatch(ctx, destination, maxSeq, MaxPDUsPerTxn, MaxLPDUsPerTxn, o.bodies)
	if err != nil {
		return nil, minBackoff, err
	}
	if len(items) == 0 {
		if resuming {
			ds.TxnLastSeq = 0
			if err = st.PutDest(ctx, destination, ds, ""); err != nil {
				return nil, minBackoff, err
			}
			return nil, 0, nil
		}
		return nil, idleWait, nil
	}
	if !resuming {
		ds.TxnLastSeq = items[len(items)-1].Seq
		if err = st.PutDest(ctx, destination, ds, ""); err != nil {
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
func txnIDOf(items []store.OutboxItem) string {
	h := sha256.New()
	for _, it := range items {
		h.Write([]byte(it.EventID))
		// Event IDs hold no NUL, so the list reads back one way only.
		h.Write([]byte{0})
	}
	sum := h.Sum(nil)
	return strconv.FormatInt(items[0].Seq, 10) + "-" + strconv.FormatInt(items[len(items)-1].Seq, 10) + "-" +
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
func (o *Outbox) dropIfDeparted(ctx context.Context, destination string, cause error) (bool, error) {
	st := o.store
	var dropped []string
	err := st.Write(ctx, func(ctx context.Context) error {
		dropped = nil
		rooms, lpdus, err := st.OutboxRooms(ctx, destination)
		if err != nil || lpdus {
			// Our LPDUs wait for their hub however long it takes.
			return err
		}
		for _, roomID := range rooms {
			if joined, err := st.ServerJoined(ctx, roomID, destination); err != nil || joined {
				return err
			}
		}
		var last int64
		if dropped, last, err = st.OutboxEventIDs(ctx, destination); err != nil {
			return err
		}
		if err = st.DeleteOutbox(ctx, destination, last); err != nil {
			return err
		}
		return st.PutDest(ctx, destination, store.Dest{SentUpTo: last}, fmt.Sprintf(
			"dropped %d events after %d failed attempts, no user of the server being joined any more: %v",
			len(dropped), o.departedRetries.Load(), cause))
	})
	if err != nil || len(dropped) == 0 {
		return false, err
	}
	for _, id := range dropped {
		o.bodies.Release(id)
	}
	o.lock.Lock()
	delete(o.failing, destination)
	o.lock.Unlock()
	o.sent(destination, len(dropped))
	zerolog.Ctx(ctx).Warn().Err(cause).Int("events", len(dropped)).Int32("attempts", o.departedRetries.Load()).
		Msg("No user of the server is joined any more and it keeps failing, dropping what was queued for it")
	return true, nil
}

// canonicalSender is a Sender that can send PDUs already in canonical JSON without re-encoding them
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

// handleSendResponse logs the PDUs a destination refused and reports the refused LPDUs of ours.
func (o *Outbox) handleSendResponse(ctx context.Context, items []store.OutboxItem, resp *federation.SendResponse) {
	if resp == nil || len(resp.FailedPDUs) == 0 {
		return
	}
	log := zerolog.Ctx(ctx)
	for _, it := range items {
		failed, ok := resp.FailedPDUs[it.EventID]
		if !ok {
			continue
		}
		log.Warn().Str("event_id", it.EventID).Str("room_id", it.RoomID).Str("error", failed.Error).
			Msg("Remote server refused an event")
		if !it.IsLPDU {
			continue
		}
		if o.failed != nil {
			o.failed(ctx, it.RoomID, it.EventID, failed.Error)
		}
	}
}
