package bridge

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	mautrixfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/internal/cpustat"
	"github.com/lmbridge/lmbridge/linearize"
	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/remote"
)

// The benchmarks run the real appservice intake, dagview, bridge and LM engines on one SQLite database, as
// lmbridge does; the homeserver is a recording HTTP server on loopback (the only fake), and the other LM server is a
// second real engine reached through its Handler methods, so that the figures are the bridge's own work and not the
// network's.

// offeredRate paces the events: 1,000 events/s offered unless -bridge.rate says otherwise.
var offeredRate = flag.Int("bridge.rate", 1000, "events per second the bridge benchmarks offer")

// dbParams are extra SQLite URI parameters for the benchmarks' database, to compare settings.
var dbParams = flag.String("bridge.dbparams", "", "extra SQLite URI parameters for the bridge benchmarks")

func offeredInterval() time.Duration {
	return time.Second / time.Duration(max(*offeredRate, 1))
}

// fakeHomeserver answers the client-server calls the bridge makes and notes when each message send arrived, keyed
// by the message body.
type fakeHomeserver struct {
	srv     *httptest.Server
	lock    sync.Mutex
	arrived map[string]time.Time
	state   []json.RawMessage
	seq     int
	notify  chan struct{}
}

func newFakeHomeserver(b *testing.B, state []json.RawMessage) *fakeHomeserver {
	hs := &fakeHomeserver{arrived: make(map[string]time.Time), state: state, notify: make(chan struct{}, 1)}
	hs.srv = httptest.NewServer(http.HandlerFunc(hs.serve))
	b.Cleanup(hs.srv.Close)
	return hs
}

func (hs *fakeHomeserver) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	body, _ := io.ReadAll(r.Body)
	w.Header().Set("Content-Type", "application/json")
	path := r.URL.Path
	switch {
	case r.Method == http.MethodGet && strings.HasSuffix(path, "/state"):
		_ = json.NewEncoder(w).Encode(hs.state)
		return
	case r.Method == http.MethodPut && strings.Contains(path, "/send/"):
		var c struct {
			Body string `json:"body"`
		}
		_ = json.Unmarshal(body, &c)
		hs.lock.Lock()
		hs.arrived[c.Body] = now
		hs.seq++
		n := hs.seq
		hs.lock.Unlock()
		select {
		case hs.notify <- struct{}{}:
		default:
		}
		_, _ = fmt.Fprintf(w, `{"event_id":"$hs%d"}`, n)
		return
	case strings.Contains(path, "/join"):
		_, _ = fmt.Fprintf(w, `{"room_id":%q}`, strings.Split(strings.Split(path, "/rooms/")[len(strings.Split(path, "/rooms/"))-1], "/")[0])
		return
	case strings.Contains(path, "/state/") || strings.Contains(path, "/redact/"):
		hs.lock.Lock()
		hs.seq++
		n := hs.seq
		hs.lock.Unlock()
		_, _ = fmt.Fprintf(w, `{"event_id":"$hs%d"}`, n)
		return
	case strings.HasSuffix(path, "/register"):
		_, _ = w.Write([]byte(`{"user_id":"@x:hs.example"}`))
		return
	}
	_, _ = w.Write([]byte(`{}`))
}

func (hs *fakeHomeserver) arrivedAt(body string) (time.Time, bool) {
	hs.lock.Lock()
	defer hs.lock.Unlock()
	t, ok := hs.arrived[body]
	return t, ok
}

// directRemote hands federation calls straight to another engine's Handler methods, through a JSON round trip. A
// nil peer accepts transactions and drops them: the fan-out is queued and sent, and its cost is not ours.
type directRemote struct {
	origin string
	peer   func() federation.Handler
}

func roundTripJSON[T any](v any, err error) (T, error) {
	var out T
	if err != nil {
		return out, err
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return out, err
	}
	err = json.Unmarshal(raw, &out)
	return out, err
}

func (d directRemote) SendTransaction(context.Context, string, string, *federation.Transaction) (*federation.SendResponse, error) {
	return &federation.SendResponse{FailedPDUs: map[string]federation.FailedPDU{}}, nil
}

func (d directRemote) Invite(ctx context.Context, _, txnID string, req *federation.InviteRequest) (*federation.InviteResponse, error) {
	return roundTripJSON[*federation.InviteResponse](d.peer().Invite(ctx, d.origin, txnID, req))
}

func (d directRemote) MakeMembership(ctx context.Context, _, membership, roomID, userID string, versions []string) (*federation.MakeMembershipResponse, error) {
	return roundTripJSON[*federation.MakeMembershipResponse](d.peer().MakeMembership(ctx, d.origin, membership, roomID, userID, versions))
}

func (d directRemote) SendJoin(ctx context.Context, _, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	return roundTripJSON[*federation.SendJoinResponse](d.peer().SendMembership(ctx, d.origin, "join", txnID, event))
}

func (d directRemote) SendLeave(context.Context, string, string, json.RawMessage) error {
	return fmt.Errorf("not used in the benchmark")
}

func (d directRemote) SendKnock(context.Context, string, string, json.RawMessage) (*federation.SendKnockResponse, error) {
	return nil, fmt.Errorf("not used in the benchmark")
}

func (d directRemote) Backfill(context.Context, string, string, []string, int) (*federation.BackfillResponse, error) {
	return nil, fmt.Errorf("not used in the benchmark")
}

// benchStack is lmbridge as it runs (appservice, dagview, bridge, LM engine) plus a second LM server.
type benchStack struct {
	hs     *fakeHomeserver
	as     *appservice.AppService
	br     *Bridge
	ours   *linearize.Engine
	remote *linearize.Engine
	hsTok  string
	asURL  string
	bob    string
	// dagTimes and lmTimes are the bridge's own time per event: HandleDAGEvent (down to the LM append) and
	// OnEvent (down to the homeserver's answer).
	dagTimes, lmTimes *serviceTimes
}

// serviceTimes collects how long each call took.
type serviceTimes struct {
	lock sync.Mutex
	durs []time.Duration
}

func (s *serviceTimes) since(t time.Time) {
	d := time.Since(t)
	s.lock.Lock()
	s.durs = append(s.durs, d)
	s.lock.Unlock()
}

func (s *serviceTimes) reset() {
	s.lock.Lock()
	s.durs = nil
	s.lock.Unlock()
}

func (s *serviceTimes) snapshot() []time.Duration {
	s.lock.Lock()
	defer s.lock.Unlock()
	return slices.Clone(s.durs)
}

// timedListener times the bridge's handling of LM events.
type timedListener struct {
	remote.Listener
	times *serviceTimes
}

func (l *timedListener) OnEvent(ctx context.Context, evt *remote.Event) error {
	defer l.times.since(time.Now())
	return l.Listener.OnEvent(ctx, evt)
}

// benchMaxConns is the size of the benchmarks' connection pool, to compare settings.
var benchMaxConns = flag.Int("bridge.conns", exampleMaxConns, "database connections the bridge benchmarks open at most")

const benchRoom = id.RoomID("!bench:hs.example")

func benchState() []json.RawMessage {
	var out []json.RawMessage
	add := func(typ, key string, sender id.UserID, content any) {
		raw, _ := json.Marshal(map[string]any{"type": typ, "state_key": key, "sender": sender, "room_id": benchRoom,
			"event_id": "$" + typ + key, "origin_server_ts": 1, "content": content})
		out = append(out, raw)
	}
	add("m.room.create", "", alice, map[string]any{"room_version": "11"})
	add("m.room.power_levels", "", alice, map[string]any{"users": map[string]any{string(alice): 100, string(testBot): 100}})
	add("m.room.join_rules", "", alice, map[string]any{"join_rule": "public"})
	add("m.room.member", string(alice), alice, map[string]any{"membership": "join"})
	add("m.room.member", string(testBot), testBot, map[string]any{"membership": "join"})
	return out
}

func newBenchStack(b *testing.B) (*benchStack, context.Context) {
	b.Helper()
	log := zerolog.New(io.Discard)
	ctx, cancel := context.WithCancel(log.WithContext(context.Background()))
	b.Cleanup(cancel)
	st := &benchStack{hs: newFakeHomeserver(b, benchState())}
	cfg := &config.Config{
		Homeserver: config.Homeserver{Address: st.hs.srv.URL, Domain: testHS},
		AppService: config.AppService{Address: "http://127.0.0.1:0", Hostname: "127.0.0.1", Port: 0, ID: "lmbridge",
			Bot: config.Bot{Username: testBot.Localpart()}, UsernameTemplate: "lm_{{.}}", AliasTemplate: "lm_{{.}}"},
		LM: config.LM{ServerName: testLM},
	}
	reg, err := appservice.GenerateRegistration(cfg, nil)
	if err != nil {
		b.Fatal(err)
	}
	st.hsTok = reg.ServerToken
	db := openRawDBWith(b, *dbParams)
	db.RawDB.SetMaxOpenConns(*benchMaxConns)
	db.RawDB.SetMaxIdleConns(2)
	st.as, err = appservice.New(appservice.Params{Homeserver: cfg.Homeserver, AppService: cfg.AppService, Registration: reg, DB: db})
	if err != nil {
		b.Fatal(err)
	}
	if err = st.as.Upgrade(ctx); err != nil {
		b.Fatal(err)
	}
	view := dagview.New(st.as, db)
	if err = view.Upgrade(ctx); err != nil {
		b.Fatal(err)
	}
	ourKey, remoteKey := mautrixfed.GenerateSigningKey(), mautrixfed.GenerateSigningKey()
	const remoteName = "remote.example"
	keys := pdu.StaticKeys{
		testLM:     {string(ourKey.ID): ourKey.Priv.Public().(ed25519.PublicKey)},
		remoteName: {string(remoteKey.ID): remoteKey.Priv.Public().(ed25519.PublicKey)},
	}
	st.ours, err = linearize.New(ctx, cfg.LM, db, linearize.Options{SigningKey: ourKey, Keys: keys,
		Remote: directRemote{origin: testLM, peer: func() federation.Handler { return st.remote.Federation() }}})
	if err != nil {
		b.Fatal(err)
	}
	st.remote, err = linearize.New(ctx, config.LM{ServerName: remoteName}, openRawDB(b), linearize.Options{SigningKey: remoteKey,
		Keys: keys, Remote: directRemote{origin: remoteName, peer: func() federation.Handler { return st.ours.Federation() }}})
	if err != nil {
		b.Fatal(err)
	}
	users, err := NewUserMapper(testHS, testLM, testBot, cfg.AppService.UsernameTemplate)
	if err != nil {
		b.Fatal(err)
	}
	st.br, err = New(Params{Config: config.Bridge{CommandPrefix: "!lm"}, DB: db, Users: users,
		Matrix: &MatrixAppService{AS: st.as, View: view}, LM: st.ours})
	if err != nil {
		b.Fatal(err)
	}
	if err = st.br.Upgrade(ctx); err != nil {
		b.Fatal(err)
	}
	st.lmTimes = &serviceTimes{}
	st.ours.AddListener("bridge", &timedListener{Listener: st.br, times: st.lmTimes})
	for _, eng := range []*linearize.Engine{st.ours, st.remote} {
		if err = eng.Start(ctx); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = eng.Stop(context.Background()) })
	}
	st.dagTimes = &serviceTimes{}
	view.SetListener(dagview.ListenerFunc(func(ctx context.Context, evt *event.Event) error {
		defer st.dagTimes.since(time.Now())
		return st.br.HandleDAGEvent(ctx, evt)
	}))
	if err = st.as.Start(ctx, view); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(st.as.Stop)
	st.asURL = "http://" + st.as.Addr().String()
	if err = view.Seed(ctx, benchRoom); err != nil {
		b.Fatal(err)
	}
	st.bob = "@bob:" + remoteName
	return st, ctx
}

// report prints p50 and p99 of the latencies from offer to done (the figure the targets are about) and of the
// bridge's service time per event (the same minus the time the event waited behind others).
func report(b *testing.B, lat, service []time.Duration, cpu time.Duration, machineStart cpustat.Sample) {
	pct := func(d []time.Duration, p float64) float64 {
		slices.Sort(d)
		return float64(d[min(len(d)-1, int(p*float64(len(d))))].Microseconds()) / 1000
	}
	b.ReportMetric(pct(lat, 0.50), "p50-ms")
	b.ReportMetric(pct(lat, 0.99), "p99-ms")
	if len(service) > 0 {
		b.ReportMetric(pct(service, 0.50), "service-p50-ms")
		b.ReportMetric(pct(service, 0.99), "service-p99-ms")
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(len(lat)), "cpu-µs/event")
	if machineEnd, err := cpustat.Read(); err == nil && machineStart.Total > 0 {
		// The machine's CPU time the hypervisor gave to other guests meanwhile: a run with a large share is not
		// comparable with a quiet one.
		b.ReportMetric(cpustat.StealPercent(machineStart, machineEnd), "steal-%")
	}
	b.ReportMetric(0, "ns/op")
}

// processCPU is the user and system CPU time the process has used: the figure per event that the neighbours' load
// on a shared machine changes least.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// timedLM notes when the engine has appended and queued each event the bridge sends, keyed by message body.
type timedLM struct {
	remote.Rooms
	lock sync.Mutex
	done map[string]time.Time
}

func (t *timedLM) SendRoomEvent(ctx context.Context, req *remote.SendRequest) (remote.EventID, error) {
	evtID, err := t.Rooms.SendRoomEvent(ctx, req)
	if c, ok := req.Content.(Content); ok && err == nil {
		if body, ok := c["body"].(string); ok {
			t.lock.Lock()
			t.done[body] = time.Now()
			t.lock.Unlock()
		}
	}
	return evtID, err
}

// BenchmarkDAGToLM offers one Matrix message per millisecond as application-service transactions (one in flight,
// carrying whatever was offered meanwhile, as a homeserver sends them) and measures from the offer to the LM event
// appended to the log of the room we host and queued for the remote server in it.
func BenchmarkDAGToLM(b *testing.B) {
	st, ctx := newBenchStack(b)
	link, err := st.br.LinkAsHub(ctx, benchRoom, string(alice))
	if err != nil {
		b.Fatal(err)
	}
	if _, err = st.remote.Join(ctx, link.LMRoomID, st.bob, testLM); err != nil {
		b.Fatal(err)
	}
	timed := &timedLM{Rooms: st.ours, done: make(map[string]time.Time)}
	st.br.lmProto.rooms = timed
	st.dagTimes.reset()
	n := b.N
	offered := make([]time.Time, n)
	start := time.Now().Add(10 * time.Millisecond)
	for i := range offered {
		offered[i] = start.Add(time.Duration(i) * offeredInterval())
	}
	cpuStart := processCPU(b)
	machineStart, _ := cpustat.Read()
	b.ResetTimer()
	client := &http.Client{}
	sent := 0
	// acks are the intake's answer times (PUT sent to 200 received), to tell its queueing from the dispatch's.
	var acks []time.Duration
	// putAt is when the transaction carrying each event was sent: lmbridge receives it over loopback at once, and the
	// wait before it (the previous transaction still in flight) is the homeserver's batching, not the bridge's work.
	putAt := make([]time.Time, n)
	for txn := 0; sent < n; txn++ {
		if wait := time.Until(offered[sent]); wait > 0 {
			time.Sleep(wait)
		}
		first := sent
		var events []map[string]any
		for now := time.Now(); sent < n && !offered[sent].After(now); sent++ {
			events = append(events, map[string]any{"type": "m.room.message", "room_id": benchRoom, "sender": alice,
				"event_id": "$bench" + strconv.Itoa(sent), "origin_server_ts": offered[sent].UnixMilli(),
				"content": map[string]any{"msgtype": "m.text", "body": "m" + strconv.Itoa(sent)}})
		}
		body, _ := json.Marshal(map[string]any{"events": events})
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, st.asURL+"/_matrix/app/v1/transactions/t"+strconv.Itoa(txn), bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+st.hsTok)
		put := time.Now()
		for k := first; k < sent; k++ {
			putAt[k] = put
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		acks = append(acks, time.Since(put))
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("transaction answered %d", resp.StatusCode)
		}
	}
	lat := make([]time.Duration, n)
	fromPut := make([]time.Duration, n)
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < n; {
		timed.lock.Lock()
		done, ok := timed.done["m"+strconv.Itoa(i)]
		timed.lock.Unlock()
		if ok {
			lat[i] = done.Sub(offered[i])
			fromPut[i] = done.Sub(putAt[i])
			i++
			continue
		}
		if time.Now().After(deadline) {
			b.Fatalf("event %d of %d never reached the LM log", i, n)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	report(b, lat, st.dagTimes.snapshot(), processCPU(b)-cpuStart, machineStart)
	slices.Sort(acks)
	b.ReportMetric(float64(acks[len(acks)/2].Microseconds())/1000, "ack-p50-ms")
	b.ReportMetric(float64(acks[min(len(acks)-1, len(acks)*99/100)].Microseconds())/1000, "ack-p99-ms")
	b.ReportMetric(float64(n)/float64(len(acks)), "events/txn")
	slices.Sort(fromPut)
	b.ReportMetric(float64(fromPut[n/2].Microseconds())/1000, "recv-p50-ms")
	b.ReportMetric(float64(fromPut[min(n-1, n*99/100)].Microseconds())/1000, "recv-p99-ms")
}

// BenchmarkLMToDAG offers one PDU per millisecond from the remote hub of a room we take part in, handed to our
// engine's /send handler, and measures from the offer (before signature and hash checks) to the bridge's send
// request arriving at the homeserver.
func BenchmarkLMToDAG(b *testing.B) {
	st, ctx := newBenchStack(b)
	roomID, err := st.remote.CreateRoom(ctx, st.bob, []remote.InitialState{{Type: "m.room.join_rules", Content: map[string]any{"join_rule": "public"}}})
	if err != nil {
		b.Fatal(err)
	}
	if _, err = st.br.LinkToLM(ctx, benchRoom, roomID, "remote.example", alice); err != nil {
		b.Fatal(err)
	}
	// The events exist on the hub before the clock starts; their PDUs are what the hub would send us.
	n := b.N + 1
	head, err := st.remote.Events(ctx, roomID, 0, 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	// Our engine holds the log from alice's join on (send_join gave it the state before); the measured PDUs follow
	// the join directly.
	if len(head) == 0 || !strings.Contains(string(head[len(head)-1].PDU), `"join"`) {
		b.Fatal("alice's join is not the hub's last event")
	}
	after := head[len(head)-1].Index
	for i := 0; i < n; i++ {
		content := map[string]any{"msgtype": "m.text", "body": "m" + strconv.Itoa(i)}
		if _, err = st.remote.SendEvent(ctx, roomID, st.bob, "m.room.message", nil, content, time.Time{}); err != nil {
			b.Fatal(err)
		}
	}
	var pdus []json.RawMessage
	for len(pdus) < n {
		evs, err := st.remote.Events(ctx, roomID, after, 500)
		if err != nil || len(evs) == 0 {
			b.Fatalf("hub log: %v", err)
		}
		for _, ev := range evs {
			pdus = append(pdus, ev.PDU)
			after = ev.Index
		}
	}
	// The first event warms the ghost up (registration, join), which happens once per ghost, not per event.
	if _, err = st.ours.Federation().Send(ctx, "remote.example", "warm", &federation.Transaction{PDUs: pdus[:1]}); err != nil {
		b.Fatal(err)
	}
	for _, ok := st.hs.arrivedAt("m0"); !ok; _, ok = st.hs.arrivedAt("m0") {
		time.Sleep(time.Millisecond)
	}
	pdus = pdus[1:]
	st.lmTimes.reset()
	offered := make([]time.Time, b.N)
	start := time.Now().Add(10 * time.Millisecond)
	cpuStart := processCPU(b)
	machineStart, _ := cpustat.Read()
	b.ResetTimer()
	for i := range pdus {
		offered[i] = start.Add(time.Duration(i) * offeredInterval())
		if wait := time.Until(offered[i]); wait > 0 {
			time.Sleep(wait)
		}
		resp, err := st.ours.Federation().Send(ctx, "remote.example", "b"+strconv.Itoa(i), &federation.Transaction{PDUs: pdus[i : i+1]})
		if err != nil || len(resp.FailedPDUs) > 0 {
			b.Fatalf("send %d: %v %v", i, err, resp)
		}
	}
	lat := make([]time.Duration, b.N)
	deadline := time.Now().Add(60 * time.Second)
	for i := 0; i < b.N; {
		if at, ok := st.hs.arrivedAt("m" + strconv.Itoa(i+1)); ok {
			lat[i] = at.Sub(offered[i])
			i++
			continue
		}
		if time.Now().After(deadline) {
			b.Fatalf("event %d of %d never reached the homeserver", i, b.N)
		}
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	report(b, lat, st.lmTimes.snapshot(), processCPU(b)-cpuStart, machineStart)
}
