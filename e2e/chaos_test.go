package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
)

// The chaos test: the real lmbridge binary as the LM hub of a room linked to a Matrix room on a real homeserver, and
// an LM peer (lmbridge's LM engine in a process of its own, see chaospeer_test.go) with one user, bob. alice on
// Matrix and bob on LM send numbered messages at the same time, in three phases: (A) lmbridge is SIGKILLed and
// restarted at random moments, (B) the peer is, (C) the homeserver is frozen (SIGSTOP) for a while. Then both sides
// must hold every message of both senders exactly once, in each sender's order.
//
// The schedule (kill moments, downtimes, pacing, when the pause starts) comes from a seed: LMBRIDGE_CHAOS_SEED, or
// the clock, printed at the start and again on failure. The default is the short variant; LMBRIDGE_CHAOS=full runs
// the full one and LMBRIDGE_CHAOS=off skips the test.

const (
	envChaos     = "LMBRIDGE_CHAOS"
	envChaosSeed = "LMBRIDGE_CHAOS_SEED"
	// envChaosLogs names a directory the logs (lmbridge's, the peer's and the homeserver's) are copied to at the end
	// of a run, for a look after the temporary directories are gone.
	envChaosLogs = "LMBRIDGE_CHAOS_LOGS"
)

// chaosVariant sizes a run.
type chaosVariant struct {
	name string
	// messages is how many each sender sends in each phase: A (lmbridge kills), B (peer kills), C (homeserver pause).
	messages [3]int
	// kills is how many times lmbridge is killed in phase A, and the peer in phase B.
	kills int
	// killEvery is the mean time between two kills, which sets the pace of phases A and B.
	killEvery time.Duration
	// pause is how long the homeserver is frozen in phase C.
	pause time.Duration
	// settle bounds the wait, after the last fault, for everything to arrive.
	settle time.Duration
}

var (
	chaosShort = chaosVariant{name: "short", messages: [3]int{100, 100, 100}, kills: 5, killEvery: 2500 * time.Millisecond,
		pause: 30 * time.Second, settle: 2 * time.Minute}
	chaosFull = chaosVariant{name: "full", messages: [3]int{400, 400, 200}, kills: 20, killEvery: 2500 * time.Millisecond,
		pause: 30 * time.Second, settle: 4 * time.Minute}
)

func TestChaos(t *testing.T) {
	variant := chaosShort
	switch mode := os.Getenv(envChaos); mode {
	case "", "short":
	case "full":
		variant = chaosFull
	case "off":
		t.Skipf("%s=off", envChaos)
	default:
		t.Fatalf("%s must be short, full or off, not %q", envChaos, mode)
	}
	seed := time.Now().UnixNano()
	if s := os.Getenv(envChaosSeed); s != "" {
		var err error
		if seed, err = strconv.ParseInt(s, 10, 64); err != nil {
			t.Fatalf("%s=%q is not an integer", envChaosSeed, s)
		}
	}
	t.Logf("chaos %s variant, seed %d (%s=%d repeats the schedule)", variant.name, seed, envChaosSeed, seed)
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("chaos %s variant on %s failed with seed %d: rerun with %s=%d %s=%s", variant.name, kind, seed,
					envChaosSeed, seed, envChaos, variant.name)
			}
		})
		runChaos(t, kind, variant, seed)
	})
}

// chaosRun is one run's parts.
type chaosRun struct {
	hs      *tesths.Homeserver
	b       *lmbridgeProcess
	peer    *peerProcess
	alice   *mautrix.Client
	room    id.RoomID
	lmRoom  string
	ghost   id.UserID
	aliceLM string
	synced  *syncRecorder
	rng     *rand.Rand
	seed    int64
}

func runChaos(t *testing.T, kind tesths.Kind, v chaosVariant, seed int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	started := time.Now()
	r := &chaosRun{rng: rand.New(rand.NewPCG(uint64(seed), 0x6c6d6272)), seed: seed}
	r.setUp(ctx, t, kind)
	if dir := os.Getenv(envChaosLogs); dir != "" {
		t.Cleanup(func() { r.keepLogs(t, filepath.Join(dir, fmt.Sprintf("%s-%d", kind, seed))) })
	}
	t.Logf("set up in %s: Matrix room %s linked to LM room %s; ghost %s", time.Since(started).Round(time.Millisecond),
		r.room, r.lmRoom, r.ghost)

	total := v.messages[0] + v.messages[1] + v.messages[2]
	phaseNames := [3]string{"lmbridge SIGKILLed", "LM peer SIGKILLed", "homeserver frozen"}
	var durations [3]time.Duration
	offset := 0
	for ph, n := range v.messages {
		phaseStart := time.Now()
		span := time.Duration(v.kills) * v.killEvery
		if ph == 2 {
			// The pause must fall inside the traffic, with traffic on both sides of it.
			span = v.pause + 10*time.Second
		}
		interval := span / time.Duration(n)
		r.peer.SetPlan(t, peerPlan{RoomID: r.lmRoom, Prefix: "l2m", Count: offset + n, IntervalMS: int(interval / time.Millisecond), Seed: seed})
		sent := make(chan error, 1)
		go func(from, to int) { sent <- r.sendFromMatrix(ctx, from, to, interval) }(offset, offset+n)
		switch ph {
		case 0:
			r.killAtRandom(t, span, v.kills, r.b.Kill, r.b.Start)
		case 1:
			r.killAtRandom(t, span, v.kills, r.peer.Kill, r.peer.Start)
		case 2:
			at := time.Duration(float64(span) * (0.05 + 0.15*r.rng.Float64()))
			time.Sleep(at)
			if err := r.hs.Pause(); err != nil {
				t.Fatal(err)
			}
			t.Logf("homeserver frozen %s into phase C, for %s", at.Round(time.Millisecond), v.pause)
			time.Sleep(v.pause)
			if err := r.hs.Resume(); err != nil {
				t.Fatal(err)
			}
		}
		if err := <-sent; err != nil {
			t.Fatalf("phase %c (%s): %v", 'A'+ph, phaseNames[ph], err)
		}
		waitUntil(t, 5*time.Minute, fmt.Sprintf("the LM peer to send its %d messages of phase %c", n, 'A'+ph), func() bool {
			st, err := r.peer.status("")
			return err == nil && st.Next >= offset+n
		})
		durations[ph] = time.Since(phaseStart)
		t.Logf("phase %c (%s): %d messages each way in %s", 'A'+ph, phaseNames[ph], n, durations[ph].Round(time.Millisecond))
		offset += n
	}

	// Everything sent must arrive; stop waiting at the bound and count what did.
	settleStart := time.Now()
	var views chaosViews
	deadline := time.Now().Add(v.settle)
	for {
		views = r.read(ctx, t)
		if views.complete(total) || time.Now().After(deadline) {
			break
		}
		time.Sleep(2 * time.Second)
	}
	// A duplicate arriving late would still count.
	time.Sleep(3 * time.Second)
	views = r.read(ctx, t)
	settled := time.Since(settleStart)

	t.Logf("chaos %s on %s, seed %d: %d lmbridge kills, %d LM peer kills, homeserver frozen %s; %d messages each way; "+
		"settled %s after the last fault; %s in all",
		v.name, kind, seed, v.kills, v.kills, v.pause, total, settled.Round(time.Millisecond), time.Since(started).Round(time.Second))
	for _, c := range views.counts(total) {
		t.Logf("  %-34s %4d arrived, %3d lost, %3d duplicated, %3d reordered%s", c.what, c.distinct, c.lost, c.duplicated, c.reordered, c.detail())
		if c.lost != 0 || c.duplicated != 0 || c.reordered != 0 {
			t.Errorf("%s: %d lost, %d duplicated, %d reordered of %d%s", c.what, c.lost, c.duplicated, c.reordered, total, c.detail())
		}
	}
	if problems := logProblems(r.b.LogPath, 1000); strings.Contains(problems, "panic") {
		t.Errorf("lmbridge panicked:\n%s", problems)
	}
}

// setUp starts the homeserver, lmbridge and the peer, links a room of alice's from Matrix and brings bob in.
func (r *chaosRun) setUp(ctx context.Context, t *testing.T, kind tesths.Kind) {
	r.b = newLMBridgeHub(t, tesths.DefaultServerName)
	opts := tesths.Options{ServerName: r.b.ServerName, Registrations: [][]byte{r.b.RegYAML}}
	if kind == tesths.Dendrite {
		// On SQLite, Dendrite's sync API panics on "database is locked" under this load (README, Limits).
		testpg.RequireT(t)
		opts.DendritePostgres = testpg.NewDatabaseT(t)
	}
	r.hs = tesths.StartT(t, kind, opts)
	r.b.SetHomeserver(t, r.hs)
	r.b.Start(t)
	r.peer = newChaosPeer(t)
	r.peer.Start(t)

	r.alice = r.hs.RegisterUserT(t, "alice", "alice-password", false)
	// Requests wait out a frozen homeserver rather than time out and be retried: a retry while the first attempt is
	// still being handled is a second event on Dendrite (see README, Limits).
	r.alice.Client = &http.Client{Timeout: 5 * time.Minute}
	bot := id.NewUserID(r.b.Registration.SenderLocalpart, r.hs.ServerName)
	users, err := bridge.NewUserMapper(r.hs.ServerName, r.b.LMAddr, bot, "lm_{{.}}")
	if err != nil {
		t.Fatal(err)
	}
	if r.ghost, err = users.GhostOf(r.peer.Settings.User); err != nil {
		t.Fatal(err)
	}
	if r.aliceLM, err = users.LMUserOf(r.alice.UserID); err != nil {
		t.Fatal(err)
	}
	created, err := r.alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "chaos",
		Invite:             []id.UserID{bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{r.alice.UserID: 100, bot: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	r.room = created.RoomID
	r.synced = startSyncRecorder(ctx, t, r.alice, r.room)
	waitUntil(t, 60*time.Second, "the bot to join", func() bool {
		members, err := r.alice.JoinedMembers(ctx, r.room)
		return err == nil && hasMember(members, bot)
	})
	answer := r.askBot(ctx, t, bot, "!lm link", "Linked this room to the LM room ")
	rest := strings.TrimPrefix(answer, "Linked this room to the LM room ")
	r.lmRoom, _, _ = strings.Cut(rest, ",")
	r.askBot(ctx, t, bot, "!lm invite "+r.peer.Settings.User, "Invited")
	waitUntil(t, 60*time.Second, "bob to join the LM room", func() bool {
		st, err := r.peer.status("")
		return err == nil && len(st.Joined) == 1 && st.Joined[0] == r.lmRoom
	})
	waitUntil(t, 60*time.Second, "bob's ghost to join the Matrix room", func() bool {
		members, err := r.alice.JoinedMembers(ctx, r.room)
		return err == nil && hasMember(members, r.ghost)
	})
}

// keepLogs copies the run's logs and the LM databases into dir.
func (r *chaosRun) keepLogs(t *testing.T, dir string) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Log(err)
		return
	}
	for name, path := range map[string]string{
		"lmbridge.log":    r.b.LogPath,
		"lmbridge.db":     r.b.DBPath,
		"lmbridge.db-wal": r.b.DBPath + "-wal",
		"peer.db-wal":     filepath.Join(r.peer.Dir, "peer.db-wal"),
		"peer.log":        filepath.Join(r.peer.Dir, "peer.log"),
		"peer.out":        filepath.Join(r.peer.Dir, "peer.out"),
		"peer.db":         filepath.Join(r.peer.Dir, "peer.db"),
		"homeserver.log":  r.hs.LogPath,
	} {
		if data, err := os.ReadFile(path); err == nil {
			_ = os.WriteFile(filepath.Join(dir, name), data, 0o644)
		}
	}
	t.Logf("logs copied to %s", dir)
}

// askBot sends a command and returns the bot's answer, which must start with want.
func (r *chaosRun) askBot(ctx context.Context, t *testing.T, bot id.UserID, command, want string) string {
	t.Helper()
	sent, err := r.alice.SendText(ctx, r.room, command)
	if err != nil {
		t.Fatal(err)
	}
	var answer string
	waitUntil(t, 60*time.Second, "the bot's answer to "+command, func() bool {
		for _, evt := range roomTimeline(ctx, t, r.alice, r.room) {
			if evt.Sender == bot && replyTarget(rawContent(evt)) == string(sent.EventID) {
				answer = bodyOf(evt)
				return true
			}
		}
		return false
	})
	if !strings.HasPrefix(answer, want) {
		t.Fatalf("the bot answered %q with %q", command, answer)
	}
	return answer
}

// sendFromMatrix sends alice's messages from to to-1, one after another, each under a transaction ID of its own that
// a retry reuses. Message i is due about (i-from)*interval after the start; one that is late (the homeserver was
// frozen) goes out at once, so the backlog drains as a client's would.
func (r *chaosRun) sendFromMatrix(ctx context.Context, from, to int, interval time.Duration) error {
	due := time.Now()
	for i := from; i < to; i++ {
		due = due.Add(jitter(r.seed, -1-i, interval))
		time.Sleep(time.Until(due))
		body := fmt.Sprintf("m2l-%04d", i)
		for attempt := 1; ; attempt++ {
			_, err := r.alice.SendMessageEvent(ctx, r.room, event.EventMessage,
				map[string]any{"msgtype": "m.text", "body": body}, mautrix.ReqSendEvent{TransactionID: "chaos-" + body})
			if err == nil {
				break
			}
			if ctx.Err() != nil || attempt == 20 {
				return fmt.Errorf("failed to send %s: %w", body, err)
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	return nil
}

// killAtRandom kills a process kills times at random moments within span from now, each time starting it again
// after a random downtime of up to half a second. A kill due while the process is still starting waits for it to be
// up and has it run a random moment first.
func (r *chaosRun) killAtRandom(t *testing.T, span time.Duration, kills int, kill, start func(*testing.T)) {
	t.Helper()
	begin := time.Now()
	at := make([]time.Duration, kills)
	for i := range at {
		at[i] = time.Duration(float64(span) * (0.05 + 0.9*r.rng.Float64()))
	}
	sort.Slice(at, func(i, j int) bool { return at[i] < at[j] })
	for _, due := range at {
		wait := time.Until(begin.Add(due))
		if wait <= 0 {
			wait = time.Duration(100+r.rng.IntN(500)) * time.Millisecond
		}
		time.Sleep(wait)
		kill(t)
		time.Sleep(time.Duration(r.rng.IntN(500)) * time.Millisecond)
		start(t)
	}
}

// chaosViews is what each side holds of the two senders' messages, as sequence numbers in the order that side has
// them.
type chaosViews struct {
	matrixFromLM, matrixFromMatrix []int
	lmFromMatrix, lmFromLM         []int
}

func (r *chaosRun) read(ctx context.Context, t *testing.T) chaosViews {
	t.Helper()
	var v chaosViews
	for _, evt := range r.synced.timeline(t) {
		if evt.Type != event.EventMessage {
			continue
		}
		switch body := bodyOf(evt); {
		case evt.Sender == r.ghost && strings.HasPrefix(body, "l2m-"):
			v.matrixFromLM = append(v.matrixFromLM, seqOf(body))
		case evt.Sender == r.alice.UserID && strings.HasPrefix(body, "m2l-"):
			v.matrixFromMatrix = append(v.matrixFromMatrix, seqOf(body))
		}
	}
	var st *peerStatus
	waitUntil(t, 60*time.Second, "the LM peer's log", func() bool {
		var err error
		st, err = r.peer.status(r.lmRoom)
		return err == nil
	})
	for _, ev := range st.Log {
		if ev.Type != "m.room.message" {
			continue
		}
		switch {
		case ev.Sender == r.aliceLM && strings.HasPrefix(ev.Body, "m2l-"):
			v.lmFromMatrix = append(v.lmFromMatrix, seqOf(ev.Body))
		case ev.Sender == r.peer.Settings.User && strings.HasPrefix(ev.Body, "l2m-"):
			v.lmFromLM = append(v.lmFromLM, seqOf(ev.Body))
		}
	}
	return v
}

// syncRecorder follows a room through a client's /sync from before the first message, as the client would, and
// keeps every timeline event once, in the order sync gave them. Paging /messages would not do for the counts:
// Dendrite v0.13.8 can leave out events at page boundaries (README, Limits).
type syncRecorder struct {
	lock    sync.Mutex
	events  []*event.Event
	seen    map[id.EventID]bool
	limited int
	errors  int
}

// syncTimelineLimit is high enough that no sync of the run is limited (a gap in the timeline).
const syncTimelineLimit = 5000

func startSyncRecorder(ctx context.Context, t *testing.T, client *mautrix.Client, room id.RoomID) *syncRecorder {
	t.Helper()
	filter, err := client.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{
		Rooms: []id.RoomID{room}, Timeline: &mautrix.FilterPart{Limit: syncTimelineLimit}}})
	if err != nil {
		t.Fatalf("failed to upload the sync filter: %v", err)
	}
	rec := &syncRecorder{seen: map[id.EventID]bool{}}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	t.Cleanup(func() {
		cancel()
		<-done
	})
	go func() {
		defer close(done)
		since := ""
		for ctx.Err() == nil {
			resp, err := client.SyncRequest(ctx, 10000, since, filter.FilterID, false, event.PresenceOffline)
			if err != nil {
				rec.lock.Lock()
				rec.errors++
				rec.lock.Unlock()
				time.Sleep(time.Second)
				continue
			}
			since = resp.NextBatch
			joined, ok := resp.Rooms.Join[room]
			if !ok {
				continue
			}
			rec.lock.Lock()
			if joined.Timeline.Limited && len(rec.events) > 0 {
				rec.limited++
			}
			for _, evt := range joined.Timeline.Events {
				if !rec.seen[evt.ID] {
					rec.seen[evt.ID] = true
					rec.events = append(rec.events, evt)
				}
			}
			rec.lock.Unlock()
		}
	}()
	return rec
}

// timeline is what the client has seen of the room so far; a sync that was limited fails the test, since the counts
// would have a gap.
func (rec *syncRecorder) timeline(t *testing.T) []*event.Event {
	t.Helper()
	rec.lock.Lock()
	defer rec.lock.Unlock()
	if rec.limited > 0 {
		t.Fatalf("%d syncs had a gap in the timeline (limited), over a limit of %d events", rec.limited, syncTimelineLimit)
	}
	return append([]*event.Event(nil), rec.events...)
}

func seqOf(body string) int {
	n, err := strconv.Atoi(body[4:])
	if err != nil {
		return -1
	}
	return n
}

// complete says whether every view holds every message at least once.
func (v chaosViews) complete(total int) bool {
	for _, c := range v.counts(total) {
		if c.lost > 0 {
			return false
		}
	}
	return true
}

// chaosCount is one view's figures.
type chaosCount struct {
	what                                   string
	distinct, lost, duplicated, reordered  int
	lostSample, duplicatedSample, outOfOrd []int
}

func (c chaosCount) detail() string {
	var parts []string
	for _, s := range []struct {
		name string
		seq  []int
	}{{"lost", c.lostSample}, {"duplicated", c.duplicatedSample}, {"out of order", c.outOfOrd}} {
		if len(s.seq) > 0 {
			parts = append(parts, fmt.Sprintf("%s e.g. %v", s.name, s.seq))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return " (" + strings.Join(parts, "; ") + ")"
}

func (v chaosViews) counts(total int) []chaosCount {
	return []chaosCount{
		countSeq("Matrix: bob's messages (LM → Matrix)", v.matrixFromLM, total),
		countSeq("LM: alice's messages (Matrix → LM)", v.lmFromMatrix, total),
		countSeq("Matrix: alice's own messages", v.matrixFromMatrix, total),
		countSeq("LM: bob's own messages", v.lmFromLM, total),
	}
}

// countSeq counts, for sequence numbers 0 … total-1 in the order a side holds them: the ones missing, the extra
// copies, and the first copies that come after a higher number (out of the sender's order).
func countSeq(what string, seq []int, total int) chaosCount {
	const sample = 10
	c := chaosCount{what: what}
	seen := make(map[int]bool, len(seq))
	highest := -1
	for _, n := range seq {
		if seen[n] {
			c.duplicated++
			if len(c.duplicatedSample) < sample {
				c.duplicatedSample = append(c.duplicatedSample, n)
			}
			continue
		}
		seen[n] = true
		if n < highest {
			c.reordered++
			if len(c.outOfOrd) < sample {
				c.outOfOrd = append(c.outOfOrd, n)
			}
		}
		highest = max(highest, n)
	}
	c.distinct = len(seen)
	for n := range total {
		if !seen[n] {
			c.lost++
			if len(c.lostSample) < sample {
				c.lostSample = append(c.lostSample, n)
			}
		}
	}
	return c
}
