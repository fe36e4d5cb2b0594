package linearize

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/internal/cpustat"
)

// BenchmarkHubFanout runs one hub and three participants on loopback HTTP, each with its own SQLite file. The
// participants send LPDUs as fast as they can (b.N in all); the hub completes, checks, appends and fans every event
// out to all three. It reports the events the hub accepted per second, and the latency from the hub receiving an
// LPDU's transaction to the PDU being appended at every participant (p50, p99, max). Bounded: it stops once every
// participant holds every event, or fails after two minutes.
//
// The flood case measures how many events the hub accepts; its latency is mostly queueing, since the participants
// offer more than the fan-out can carry. The paced cases offer a fixed total rate, which is what latency means.
func BenchmarkHubFanout(b *testing.B) {
	b.Run("flood", func(b *testing.B) { benchmarkHubFanout(b, 0, 0) })
	b.Run("saturated", func(b *testing.B) { benchmarkHubFanout(b, 0, saturationWindow) })
	for _, rate := range []int{500, 1000, 2000, 2100, 2200} {
		b.Run(fmt.Sprintf("paced_%d_per_s", rate), func(b *testing.B) { benchmarkHubFanout(b, rate, 0) })
	}
}

// benchKeys are the signing keys of the hub and the participants in every case. A server's peers keep their keys, and
// sigverify keeps a table per busy key, at most 32 per process: keys new in every case would use them up after four
// cases and leave the later ones verifying at crypto/ed25519's speed.
var benchKeys = sync.OnceValue(func() []*mautrixfed.SigningKey {
	keys := make([]*mautrixfed.SigningKey, 4)
	for i := range keys {
		keys[i] = mautrixfed.GenerateSigningKey()
	}
	return keys
})

// saturationWindow is how many events the saturated case keeps between the SendEvent call and delivery to every
// participant: the participants send as fast as the hub takes them, which is what the target describes,
// without the flood's up-front burst of signing and queueing every event on the same two cores.
const saturationWindow = 300

// senderWorkers is how many goroutines per participant call SendEvent.
const senderWorkers = 4

// benchmarkHubFanout offers b.N events from three participants, at rate events/s in all (0: as fast as possible),
// with at most window events not yet delivered everywhere (0: no limit).
func benchmarkHubFanout(b *testing.B, rate, window int) {
	const participants = 3
	var lock sync.Mutex
	// inFlight counts events given to SendEvent and not yet delivered everywhere; progress signals deliveries.
	inFlight := 0
	progress := sync.NewCond(&lock)
	received := make(map[string]time.Time)
	// delivered[eventID] counts participants holding the event; done[eventID] is when the last one appended it.
	delivered := make(map[string]int)
	done := make(map[string]time.Time)
	// committed[eventID] is when the hub's append committed; arrivedAll[eventID] is when the last participant
	// received the transaction that carried it: the stages the latency splits into.
	committed := make(map[string]time.Time)
	arrivedAll := make(map[string]time.Time)
	hub := newHTTPNodeWithKey(b, benchKeys()[0], func(eventID string, at time.Time) {
		now := time.Now()
		lock.Lock()
		received[eventID] = at
		committed[eventID] = now
		lock.Unlock()
	})
	onPart := func(eventID string, arrived time.Time) {
		now := time.Now()
		lock.Lock()
		if arrived.After(arrivedAll[eventID]) {
			arrivedAll[eventID] = arrived
		}
		delivered[eventID]++
		if delivered[eventID] == participants {
			done[eventID] = now
			inFlight--
			progress.Broadcast()
		}
		lock.Unlock()
	}
	ctx := testContext(b)
	alice := userAt("alice", hub.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	var parts []*node
	for i := 0; i < participants; i++ {
		part := newHTTPNodeWithKey(b, benchKeys()[1+i], onPart)
		user := userAt("user", part.name)
		must(hub.eng.InviteUser(ctx, roomID, alice, user))
		must(part.eng.Join(ctx, roomID, user, hub.name))
		parts = append(parts, part)
	}
	for _, part := range parts {
		waitHead(b, part, roomID, logIDs(b, hub, roomID)[len(logIDs(b, hub, roomID))-1])
	}
	lock.Lock()
	clear(received)
	clear(delivered)
	clear(done)
	clear(committed)
	clear(arrivedAll)
	inFlight = 0
	lock.Unlock()
	startLen := len(logIDs(b, hub, roomID))

	nodes := append([]*node{hub}, parts...)
	counts := func() (commits, txns, items int64) {
		for _, n := range nodes {
			commits += n.eng.store.Commits()
			txns += n.eng.outbox.SentTxns()
			items += n.eng.outbox.SentItems()
		}
		return
	}
	commits0, txns0, items0 := counts()
	b.ReportAllocs()
	b.ResetTimer()
	cpuStart := cpuTime()
	machineStart, statErr := cpustat.Read()
	start := time.Now()
	var wg sync.WaitGroup
	for i, part := range parts {
		n := b.N / participants
		if i < b.N%participants {
			n++
		}
		// Open loop: the offers go into a queue that senderWorkers goroutines per participant drain, so that one slow
		// SendEvent call does not hold back the offers behind it (as a bridge with several rooms would call it).
		offers := make(chan int, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer close(offers)
			if rate == 0 {
				for j := 0; j < n; j++ {
					offers <- j
				}
				return
			}
			// Offer j is due at start + j·interval; one that comes late (the scheduler) goes at once, so the offers
			// catch up instead of being lost as a ticker's missed ticks are.
			interval := time.Second * participants / time.Duration(rate)
			for j := 0; j < n; j++ {
				if wait := time.Until(start.Add(time.Duration(j) * interval)); wait > 0 {
					time.Sleep(wait)
				}
				offers <- j
			}
		}()
		user := userAt("user", part.name)
		for w := 0; w < senderWorkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := range offers {
					if window > 0 {
						lock.Lock()
						for inFlight >= window {
							progress.Wait()
						}
						inFlight++
						lock.Unlock()
					}
					must(part.eng.SendEvent(ctx, roomID, user, "m.room.message", nil, text(fmt.Sprintf("%s %d", part.name, j)), time.Time{}))
				}
			}()
		}
	}
	wg.Wait()
	offered := time.Since(start)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		lock.Lock()
		complete := len(done)
		lock.Unlock()
		if complete >= b.N {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d events reached every participant", complete, b.N)
		}
		time.Sleep(5 * time.Millisecond)
	}
	elapsed := time.Since(start)
	cpu := cpuTime() - cpuStart
	machineEnd, _ := cpustat.Read()
	b.StopTimer()
	commits1, txns1, items1 := counts()

	if got := len(logIDs(b, hub, roomID)) - startLen; got != b.N {
		b.Fatalf("hub appended %d events, want %d", got, b.N)
	}
	lock.Lock()
	defer lock.Unlock()
	var lat, atHub, toPart, atPart []time.Duration
	for id, at := range done {
		if r, ok := received[id]; ok {
			lat = append(lat, at.Sub(r))
			atHub = append(atHub, committed[id].Sub(r))
			toPart = append(toPart, arrivedAll[id].Sub(committed[id]))
			atPart = append(atPart, at.Sub(arrivedAll[id]))
		}
	}
	for _, l := range [][]time.Duration{lat, atHub, toPart, atPart} {
		slices.Sort(l)
	}
	pctOf := func(l []time.Duration, p float64) float64 {
		return float64(l[min(len(l)-1, int(float64(len(l))*p))].Microseconds()) / 1000
	}
	pct := func(p float64) float64 { return pctOf(lat, p) }
	if len(lat) != b.N {
		b.Fatalf("measured the latency of %d events, want %d", len(lat), b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	// The rate the SendEvent calls were made at: below the paced rate when the senders could not keep up.
	b.ReportMetric(float64(b.N)/offered.Seconds(), "offered/s")
	b.ReportMetric(pct(0.50), "p50_ms")
	b.ReportMetric(pct(0.99), "p99_ms")
	b.ReportMetric(float64(lat[len(lat)-1].Microseconds())/1000, "max_ms")
	// Where the time goes, each stage's own p99: the hub's /send until its append commits; the outbox until the last
	// participant receives the transaction; that participant's checks and append.
	b.ReportMetric(pctOf(atHub, 0.99), "hub-p99_ms")
	b.ReportMetric(pctOf(toPart, 0.99), "outbox-p99_ms")
	b.ReportMetric(pctOf(atPart, 0.99), "part-p99_ms")
	// CPU time of all four engines per event: what the machine's load does not change. 2 cores / this = the
	// events/s an unloaded 2-core machine could accept.
	b.ReportMetric(float64(cpu.Microseconds())/1000/float64(b.N), "cpu_ms/event")
	if statErr == nil {
		// The machine's CPU time the hypervisor gave to other guests meanwhile: a run with a large share is not
		// comparable with a quiet one.
		b.ReportMetric(cpustat.StealPercent(machineStart, machineEnd), "steal_%")
	}
	// Database commits of all four engines, and how full the transactions between them were: the per-transaction
	// costs (a commit, an HTTP request, X-Matrix) are paid per event when every event travels alone.
	b.ReportMetric(float64(commits1-commits0)/float64(b.N), "commits/event")
	if txns1 > txns0 {
		b.ReportMetric(float64(items1-items0)/float64(txns1-txns0), "pdus/txn")
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
