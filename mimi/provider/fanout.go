package provider

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

// batchRows bounds the fan-out messages concatenated into one notify request.
const batchRows = 64

// memRows bounds the rows a worker keeps in memory; past it (a follower down for long) it reads them from the
// database again.
const memRows = 10000

// fanout delivers the hub's outbox: one worker per follower, one request in flight each, in outbox order, retried
// with exponential backoff (or the follower's Retry-After) until the follower answers 201. Rows are deleted only
// after that answer, and are sent as stored, so a restart repeats byte for byte what may already have arrived.
type fanout struct {
	p       *Provider
	ctx     context.Context
	mu      sync.Mutex
	workers map[string]chan struct{}
	status  map[string]*FollowerStatus
	wg      sync.WaitGroup
	// mem is, for a destination whose memOK is set, exactly its rows in mimi_outbox in order, so that its worker
	// reads the database only after a start or a fall-back; gen counts the rows queued for it, so that a worker
	// that found the table empty knows whether rows came meanwhile.
	mem   map[string][]outboxRow
	memOK map[string]bool
	gen   map[string]uint64
}

// queuedRow is an outbox row just stored for dest.
type queuedRow struct {
	dest string
	outboxRow
}

// FollowerStatus is the delivery state of one follower provider.
type FollowerStatus struct {
	Destination string
	// Queued is how many fan-out messages wait for its 201; Oldest is the hub time of the first.
	Queued int
	Oldest time.Time
	// Attempts is how many requests failed in a row, LastError the last failure.
	Attempts  int
	LastError string
}

func newFanout(p *Provider) *fanout {
	return &fanout{p: p, workers: map[string]chan struct{}{}, status: map[string]*FollowerStatus{},
		mem: map[string][]outboxRow{}, memOK: map[string]bool{}, gen: map[string]uint64{}}
}

func (f *fanout) start(ctx context.Context) error {
	f.mu.Lock()
	f.ctx = ctx
	f.mu.Unlock()
	rows, err := f.p.db.Query(ctx, outboxDestsQuery)
	if err != nil {
		return fmt.Errorf("listing fan-out destinations: %w", err)
	}
	dests, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("listing fan-out destinations: %w", err)
	}
	f.kick(dests...)
	return nil
}

func (f *fanout) wait() { f.wg.Wait() }

// kick wakes (or starts) the workers of dests.
func (f *fanout) kick(dests ...string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.ctx == nil || f.ctx.Err() != nil {
		return
	}
	for _, d := range dests {
		ch := f.workers[d]
		if ch == nil {
			ch = make(chan struct{}, 1)
			f.workers[d] = ch
			f.status[d] = &FollowerStatus{Destination: d}
			f.wg.Add(1)
			go f.worker(f.ctx, d, ch)
		}
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

// enqueue hands rows the hub has just committed to their workers.
func (f *fanout) enqueue(rows []queuedRow) {
	f.mu.Lock()
	var dests []string
	for _, r := range rows {
		f.gen[r.dest]++
		if f.memOK[r.dest] {
			if f.mem[r.dest] = append(f.mem[r.dest], r.outboxRow); len(f.mem[r.dest]) > memRows {
				f.memOK[r.dest], f.mem[r.dest] = false, nil
			}
		}
		if !slices.Contains(dests, r.dest) {
			dests = append(dests, r.dest)
		}
	}
	f.mu.Unlock()
	f.kick(dests...)
}

// next is the next batch for dest: from memory, or from the table until the table is found empty.
func (f *fanout) next(ctx context.Context, dest string) (rows []outboxRow, more, fromMem bool, err error) {
	f.mu.Lock()
	if f.memOK[dest] {
		q := f.mem[dest]
		n := 0
		for n < len(q) && n < batchRows && q[n].room == q[0].room {
			n++
		}
		f.mu.Unlock()
		return q[:n:n], n < len(q), true, nil
	}
	gen := f.gen[dest]
	f.mu.Unlock()
	rows, more, err = f.head(ctx, dest)
	if err == nil && len(rows) == 0 {
		f.mu.Lock()
		if f.gen[dest] == gen {
			f.memOK[dest], f.mem[dest] = true, nil
		}
		f.mu.Unlock()
	}
	return rows, more, false, err
}

// done drops delivered rows from memory.
func (f *fanout) done(dest string, n int) (more bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.memOK[dest] {
		f.mem[dest] = f.mem[dest][n:]
		return len(f.mem[dest]) > 0
	}
	return true
}

type outboxRow struct {
	seq    int64
	room   string
	fanout []byte
}

// head reads the first rows queued for dest that belong to the room of the first one; more says whether rows may
// follow them (the batch is full, or the next row is another room's).
func (f *fanout) head(ctx context.Context, dest string) (out []outboxRow, more bool, err error) {
	rows, err := f.p.db.Query(ctx, outboxHeadQuery, dest, batchRows)
	if err != nil {
		return nil, false, err
	}
	defer rows.Close()
	for rows.Next() {
		var r outboxRow
		if err := rows.Scan(&r.seq, &r.room, &r.fanout); err != nil {
			return nil, false, err
		}
		if len(out) > 0 && r.room != out[0].room {
			more = true
			break
		}
		out = append(out, r)
	}
	return out, more || len(out) == batchRows, rows.Err()
}

func (f *fanout) worker(ctx context.Context, dest string, kick chan struct{}) {
	defer f.wg.Done()
	log := zerolog.Ctx(ctx).With().Str("follower", dest).Logger()
	backoff := f.p.cfg.RetryMin
	for ctx.Err() == nil {
		rows, more, fromMem, err := f.next(ctx, dest)
		if err == nil && len(rows) == 0 {
			select {
			case <-ctx.Done():
				return
			case <-kick:
			}
			continue
		}
		var wait time.Duration
		if err == nil {
			var body []byte
			for _, r := range rows {
				body = append(body, r.fanout...)
			}
			wait, err = f.deliver(ctx, dest, rows[0].room, body)
		}
		if err == nil {
			last := rows[len(rows)-1].seq
			if _, err = f.p.db.Exec(ctx, deleteOutboxQuery, dest, last, rows[0].room); err == nil {
				f.setStatus(dest, nil)
				backoff = f.p.cfg.RetryMin
				if fromMem {
					more = f.done(dest, len(rows))
				}
				// Rows queued since the head was read kicked the worker; without a kick there is nothing to read.
				if !more {
					select {
					case <-ctx.Done():
						return
					case <-kick:
					}
				}
				continue
			}
		}
		if ctx.Err() != nil {
			return
		}
		attempts := f.setStatus(dest, err)
		if wait == 0 {
			wait, backoff = backoff, min(backoff*2, f.p.cfg.RetryMax)
		}
		log.Debug().Err(err).Int("attempts", attempts).Dur("retry_in", wait).Msg("Notify failed")
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

func (f *fanout) setStatus(dest string, err error) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	s := f.status[dest]
	if err == nil {
		s.Attempts, s.LastError = 0, ""
		return 0
	}
	s.Attempts++
	s.LastError = err.Error()
	return s.Attempts
}

// deliver sends one notify body; this provider's own users get it in-process.
func (f *fanout) deliver(ctx context.Context, dest, room string, body []byte) (time.Duration, error) {
	if dest == f.p.domain {
		return 0, f.p.receiveNotify(ctx, f.p.domain, room, body)
	}
	status, resp, h, err := f.p.peers.post(ctx, dest, func(d *protocol.Directory) string { return d.Notify }, map[string]string{"roomId": room}, body)
	if err != nil {
		return 0, err
	}
	if status != http.StatusCreated {
		return retryAfter(h), peerError("notify", status, resp)
	}
	return 0, nil
}

// DeliveryStatus is the fan-out state of every follower this provider has sent to since it started, plus any with
// messages still queued from before.
func (p *Provider) DeliveryStatus(ctx context.Context) ([]FollowerStatus, error) {
	rows, err := p.db.Query(ctx, outboxCountQuery)
	if err != nil {
		return nil, fmt.Errorf("reading fan-out state: %w", err)
	}
	queued := map[string]FollowerStatus{}
	for rows.Next() {
		var s FollowerStatus
		var oldest int64
		if err := rows.Scan(&s.Destination, &s.Queued, &oldest); err != nil {
			rows.Close()
			return nil, err
		}
		s.Oldest = time.UnixMilli(oldest)
		queued[s.Destination] = s
	}
	rows.Close()
	p.fanout.mu.Lock()
	for d, st := range p.fanout.status {
		s := queued[d]
		s.Destination, s.Attempts, s.LastError = d, st.Attempts, st.LastError
		queued[d] = s
	}
	p.fanout.mu.Unlock()
	out := make([]FollowerStatus, 0, len(queued))
	for _, d := range sortedKeys(func() map[string]bool {
		m := map[string]bool{}
		for d := range queued {
			m[d] = true
		}
		return m
	}()) {
		out = append(out, queued[d])
	}
	return out, rows.Err()
}
