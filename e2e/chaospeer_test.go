package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
)

// The chaos test's LM peer is lmbridge's LM engine in a process of its own, so that it can be SIGKILLed: the test
// binary runs itself with envChaosPeer naming the peer's directory, and TestMain hands over to runChaosPeer. The
// directory holds everything the peer keeps (its database, signing key, settings, plan and progress), so a restart
// after a kill is the same server with the same name, key and data.

// envChaosPeer, when set, makes the test binary run as the chaos LM peer with its files in that directory.
const envChaosPeer = "LMBRIDGE_E2E_CHAOS_PEER"

// peerSettings are fixed for the peer's life: its LM address (also its server name) and its control address.
type peerSettings struct {
	LMAddr      string `json:"lm_addr"`
	ControlAddr string `json:"control_addr"`
	User        string `json:"user"`
}

// peerPlan is what the peer sends: messages Prefix-0000 … Prefix-(Count-1) in RoomID, one every about IntervalMS
// (jittered from Seed), each under the idempotency key of its body, so a send repeated after a kill is not a second
// event. The test raises Count phase by phase.
type peerPlan struct {
	RoomID     string `json:"room_id"`
	Prefix     string `json:"prefix"`
	Count      int    `json:"count"`
	IntervalMS int    `json:"interval_ms"`
	Seed       int64  `json:"seed"`
}

// peerStatus is the peer's answer to GET /status.
type peerStatus struct {
	Joined []string    `json:"joined"`
	Next   int         `json:"next"`
	Log    []peerEvent `json:"log"`
}

// peerEvent is one event of the peer's copy of a room's log.
type peerEvent struct {
	Index   int64  `json:"index"`
	EventID string `json:"event_id"`
	Sender  string `json:"sender"`
	Type    string `json:"type"`
	Body    string `json:"body"`
}

// chaosPeer is the running peer program.
type chaosPeer struct {
	dir      string
	settings peerSettings
	engine   *linearize.Engine
	ctx      context.Context

	lock    sync.Mutex
	joined  map[string]bool
	joining map[string]bool
	sending bool
	plan    peerPlan
}

// runChaosPeer is the peer's main: it serves LM and the control API until SIGTERM, or until SIGKILL.
func runChaosPeer(dir string) int {
	logFile, err := os.OpenFile(filepath.Join(dir, "peer.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		fmt.Fprintln(os.Stderr, "failed to open the peer log:", err)
		return 1
	}
	defer logFile.Close()
	log := zerolog.New(logFile).Level(zerolog.InfoLevel).With().Timestamp().Int("pid", os.Getpid()).Logger()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	ctx = log.WithContext(ctx)
	if err = serveChaosPeer(ctx, dir); err != nil {
		log.Error().Err(err).Msg("Chaos peer failed")
		return 1
	}
	log.Info().Msg("Chaos peer stopped")
	return 0
}

func serveChaosPeer(ctx context.Context, dir string) error {
	p := &chaosPeer{dir: dir, ctx: ctx, joined: map[string]bool{}, joining: map[string]bool{}}
	if err := readJSONFile(filepath.Join(dir, "settings.json"), &p.settings); err != nil {
		return err
	}
	var joined []string
	if err := readJSONFile(filepath.Join(dir, "joined.json"), &joined); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, room := range joined {
		p.joined[room] = true
	}
	db, err := database.Open(ctx, config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(dir, "peer.db") + "?_txlock=immediate", MaxOpenConns: 5, MaxIdleConns: 2})
	if err != nil {
		return fmt.Errorf("failed to open the peer database: %w", err)
	}
	defer db.Close()
	p.engine, err = linearize.New(ctx, config.LM{ServerName: p.settings.LMAddr, Listen: p.settings.LMAddr,
		AllowPlainHTTP: true, AllowHTTPPeers: true, SigningKeyPath: filepath.Join(dir, "peer.signing.key")},
		db.Database, linearize.Options{})
	if err != nil {
		return fmt.Errorf("failed to set up the peer's LM engine: %w", err)
	}
	p.engine.AddListener("chaos", p)
	if err = p.engine.Start(ctx); err != nil {
		return fmt.Errorf("failed to start the peer's LM engine: %w", err)
	}
	defer func() { _ = p.engine.Stop(context.WithoutCancel(ctx)) }()

	if err = readJSONFile(filepath.Join(dir, "plan.json"), &p.plan); err == nil {
		p.startSending()
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	ln, err := net.Listen("tcp", p.settings.ControlAddr)
	if err != nil {
		return fmt.Errorf("failed to listen for control requests: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /status", p.serveStatus)
	mux.HandleFunc("PUT /plan", p.servePlan)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	zerolog.Ctx(ctx).Info().Str("lm", p.settings.LMAddr).Str("control", p.settings.ControlAddr).Msg("Chaos peer is up")
	if err = srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("control server failed: %w", err)
	}
	return nil
}

// OnInvite joins the peer's user to the room in the background (the dispatcher must not wait on a join, which needs
// it), retrying until the join works.
func (p *chaosPeer) OnInvite(_ context.Context, inv *linearize.Invite) error {
	if inv.Target != p.settings.User {
		return nil
	}
	p.lock.Lock()
	busy := p.joined[inv.RoomID] || p.joining[inv.RoomID]
	p.joining[inv.RoomID] = true
	p.lock.Unlock()
	if busy {
		return nil
	}
	hub := inv.HubServer
	if hub == "" {
		_, hub, _ = strings.Cut(inv.RoomID, ":")
	}
	go func() {
		log := zerolog.Ctx(p.ctx).With().Str("room_id", inv.RoomID).Logger()
		for p.ctx.Err() == nil {
			if _, err := p.engine.Join(p.ctx, inv.RoomID, p.settings.User, hub); err != nil {
				log.Warn().Err(err).Msg("Join failed; retrying")
				time.Sleep(500 * time.Millisecond)
				continue
			}
			p.lock.Lock()
			p.joined[inv.RoomID] = true
			rooms := make([]string, 0, len(p.joined))
			for room := range p.joined {
				rooms = append(rooms, room)
			}
			p.lock.Unlock()
			if err := writeJSONFile(filepath.Join(p.dir, "joined.json"), rooms); err != nil {
				log.Error().Err(err).Msg("Failed to record the join")
			}
			log.Info().Msg("Joined")
			return
		}
	}()
	return nil
}

// OnEvent keeps nothing: the test reads the room's log, which is what the peer holds, not the deliveries.
func (p *chaosPeer) OnEvent(context.Context, *linearize.Event) error { return nil }

func (p *chaosPeer) OnLPDUFailed(_ context.Context, roomID, lpduID, reason string) {
	zerolog.Ctx(p.ctx).Error().Str("room_id", roomID).Str("lpdu_id", lpduID).Str("reason", reason).Msg("The hub refused an LPDU")
}

func (p *chaosPeer) servePlan(w http.ResponseWriter, r *http.Request) {
	var plan peerPlan
	if err := json.NewDecoder(r.Body).Decode(&plan); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if err := writeJSONFile(filepath.Join(p.dir, "plan.json"), plan); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.lock.Lock()
	p.plan = plan
	p.lock.Unlock()
	p.startSending()
	w.WriteHeader(http.StatusNoContent)
}

// startSending runs the sender unless it is running; it reads the plan afresh for every message.
func (p *chaosPeer) startSending() {
	p.lock.Lock()
	defer p.lock.Unlock()
	if p.sending {
		return
	}
	p.sending = true
	go p.send()
}

func (p *chaosPeer) send() {
	log := zerolog.Ctx(p.ctx)
	defer func() {
		p.lock.Lock()
		p.sending = false
		p.lock.Unlock()
	}()
	next, err := p.next()
	if err != nil {
		log.Error().Err(err).Msg("Failed to read the progress")
		return
	}
	for p.ctx.Err() == nil {
		p.lock.Lock()
		plan := p.plan
		p.lock.Unlock()
		if next >= plan.Count {
			// Wait for the test to raise the count.
			time.Sleep(50 * time.Millisecond)
			continue
		}
		time.Sleep(jitter(plan.Seed, next, time.Duration(plan.IntervalMS)*time.Millisecond))
		body := fmt.Sprintf("%s-%04d", plan.Prefix, next)
		content := map[string]any{"msgtype": "m.text", "body": body}
		if _, err = p.engine.SendEventKeyed(p.ctx, plan.RoomID, p.settings.User, "m.room.message", nil, content,
			time.Time{}, "chaos:"+body); err != nil {
			log.Warn().Err(err).Str("body", body).Msg("Send failed; retrying")
			time.Sleep(200 * time.Millisecond)
			continue
		}
		next++
		if err = os.WriteFile(filepath.Join(p.dir, "next.tmp"), []byte(fmt.Sprint(next)), 0o600); err == nil {
			err = os.Rename(filepath.Join(p.dir, "next.tmp"), filepath.Join(p.dir, "next"))
		}
		if err != nil {
			log.Error().Err(err).Msg("Failed to record the progress")
			return
		}
	}
}

// next is the index of the next message to send. Written after each send, it may lag one message behind a kill; the
// idempotency key makes sending that one again harmless.
func (p *chaosPeer) next() (int, error) {
	data, err := os.ReadFile(filepath.Join(p.dir, "next"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	} else if err != nil {
		return 0, err
	}
	var n int
	_, err = fmt.Sscan(string(data), &n)
	return n, err
}

func (p *chaosPeer) serveStatus(w http.ResponseWriter, r *http.Request) {
	st := peerStatus{}
	var err error
	if st.Next, err = p.next(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.lock.Lock()
	for room := range p.joined {
		st.Joined = append(st.Joined, room)
	}
	p.lock.Unlock()
	if room := r.URL.Query().Get("room_id"); room != "" {
		for after := int64(0); ; {
			evs, err := p.engine.Events(r.Context(), room, after, 500)
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			for _, ev := range evs {
				var f struct {
					Sender  string `json:"sender"`
					Type    string `json:"type"`
					Content struct {
						Body string `json:"body"`
					} `json:"content"`
				}
				_ = json.Unmarshal(ev.PDU, &f)
				st.Log = append(st.Log, peerEvent{Index: ev.Index, EventID: ev.EventID, Sender: f.Sender, Type: f.Type, Body: f.Content.Body})
				after = ev.Index
			}
			if len(evs) < 500 {
				break
			}
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(st)
}

// jitter is a pause of between half and one and a half times interval, fixed by seed and i, so a run's pacing is
// reproducible.
func jitter(seed int64, i int, interval time.Duration) time.Duration {
	h := fnv.New64a()
	fmt.Fprintf(h, "%d/%d", seed, i)
	return interval/2 + time.Duration(h.Sum64()%uint64(interval+1))
}

func readJSONFile(path string, into any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err = json.Unmarshal(data, into); err != nil {
		return fmt.Errorf("failed to parse %s: %w", path, err)
	}
	return nil
}

// writeJSONFile replaces path atomically, so a kill leaves the old or the new file, never half of one.
func writeJSONFile(path string, v any) error {
	data, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err = os.WriteFile(path+".tmp", data, 0o600); err != nil {
		return err
	}
	return os.Rename(path+".tmp", path)
}

// peerProcess is the test's handle on the chaos peer.
type peerProcess struct {
	Dir      string
	Settings peerSettings
	cmd      *exec.Cmd
	done     chan struct{}
	starts   int
}

// newChaosPeer prepares a peer's directory with fixed LM and control addresses.
func newChaosPeer(t *testing.T) *peerProcess {
	t.Helper()
	ports := freePorts(t, 2)
	p := &peerProcess{Dir: t.TempDir()}
	p.Settings = peerSettings{
		LMAddr:      fmt.Sprintf("127.0.0.1:%d", ports[0]),
		ControlAddr: fmt.Sprintf("127.0.0.1:%d", ports[1]),
	}
	p.Settings.User = "@bob:" + p.Settings.LMAddr
	if err := writeJSONFile(filepath.Join(p.Dir, "settings.json"), p.Settings); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		p.signal(t, syscall.SIGTERM, 15*time.Second)
		if t.Failed() {
			t.Logf("last lines of the LM peer's log:\n%s", fileTail(filepath.Join(p.Dir, "peer.log"), 4000))
		}
	})
	return p
}

// Start runs the peer (the test binary in peer mode) and waits for its control API to answer.
func (p *peerProcess) Start(t *testing.T) {
	t.Helper()
	if p.cmd != nil {
		t.Fatal("the LM peer is already running")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p.starts++
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), envChaosPeer+"="+p.Dir)
	cmd.Dir = p.Dir
	out, err := os.OpenFile(filepath.Join(p.Dir, "peer.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err = cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("failed to start the LM peer: %v", err)
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-p.done:
			p.cmd = nil
			t.Fatalf("the LM peer exited during start-up:\n%s\n%s", fileTail(filepath.Join(p.Dir, "peer.out"), 2000),
				fileTail(filepath.Join(p.Dir, "peer.log"), 2000))
		default:
		}
		if _, err := p.status(""); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LM peer did not answer within 60 s:\n%s", fileTail(filepath.Join(p.Dir, "peer.log"), 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends the peer with SIGKILL.
func (p *peerProcess) Kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL, 10*time.Second)
}

func (p *peerProcess) signal(t *testing.T, sig syscall.Signal, grace time.Duration) {
	t.Helper()
	if p.cmd == nil {
		return
	}
	_ = syscall.Kill(p.cmd.Process.Pid, sig)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
		t.Errorf("the LM peer did not exit within %s of %s", grace, sig)
	}
	p.cmd = nil
}

var peerHTTP = &http.Client{Timeout: 30 * time.Second}

// status asks the running peer for its progress and, when roomID is set, its copy of that room's log.
func (p *peerProcess) status(roomID string) (*peerStatus, error) {
	u := "http://" + p.Settings.ControlAddr + "/status"
	if roomID != "" {
		u += "?room_id=" + roomID
	}
	resp, err := peerHTTP.Get(u)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /status answered %s", resp.Status)
	}
	var st peerStatus
	if err = json.NewDecoder(resp.Body).Decode(&st); err != nil {
		return nil, fmt.Errorf("failed to decode the peer's status: %w", err)
	}
	return &st, nil
}

// SetPlan gives the running peer its plan (stored in its directory, so it survives kills).
func (p *peerProcess) SetPlan(t *testing.T, plan peerPlan) {
	t.Helper()
	data, err := json.Marshal(plan)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequest(http.MethodPut, "http://"+p.Settings.ControlAddr+"/plan", strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := peerHTTP.Do(req)
	if err != nil {
		t.Fatalf("failed to give the LM peer its plan: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("PUT /plan answered %s", resp.Status)
	}
}

// freePorts returns n distinct free loopback ports (tesths.FreePort never gives one twice).
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	var ports []int
	for len(ports) < n {
		port, err := tesths.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports = append(ports, port)
	}
	return ports
}
