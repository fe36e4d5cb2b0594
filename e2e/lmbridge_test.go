package e2e

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lib/pq"
	_ "github.com/mattn/go-sqlite3"
	"github.com/rs/zerolog"
	"gopkg.in/yaml.v3"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
)

var (
	buildOnce sync.Once
	buildDir  string
	buildPath string
	buildErr  error
)

func TestMain(m *testing.M) {
	if dir := os.Getenv(envChaosPeer); dir != "" {
		os.Exit(runChaosPeer(dir))
	}
	code := m.Run()
	if buildDir != "" {
		_ = os.RemoveAll(buildDir)
	}
	if err := testpg.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to stop PostgreSQL:", err)
		code = 1
	}
	os.Exit(code)
}

// dbKind is the database engine lmbridge's tables are on in a test.
type dbKind string

const (
	sqliteDB   dbKind = "sqlite"
	postgresDB dbKind = "postgres"
)

// newDatabase returns the database.type and database.uri of a fresh database of the kind: a file in dir, or a new
// database on the test binary's PostgreSQL server.
func newDatabase(t *testing.T, kind dbKind, dir, name string) (dbType, uri string) {
	t.Helper()
	if kind == postgresDB {
		return "postgres", testpg.NewDatabaseT(t)
	}
	return "sqlite3-fk-wal", "file:" + filepath.Join(dir, name+".db") + "?_txlock=immediate"
}

// lmbridgeBinary builds cmd/lmbridge once per test run, with the go command on PATH (the one running the tests).
func lmbridgeBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "lmbridge-e2e-")
		if buildErr != nil {
			return
		}
		buildPath = filepath.Join(buildDir, "lmbridge")
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/lmbridge/lmbridge/cmd/lmbridge")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build failed: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatalf("failed to build lmbridge: %v", buildErr)
	}
	return buildPath
}

// lmbridgeProcess is lmbridge running as a subprocess, with its config, registration and database in Dir.
type lmbridgeProcess struct {
	Bin        string
	Dir        string
	ConfigPath string
	RegPath    string
	DBType     string
	DBURI      string
	DBPath     string // the SQLite file; empty on PostgreSQL
	LogPath    string
	Port       int
	ServerName string
	// LMAddr, when set, is the LM listener's fixed address and lmbridge's LM server name, so that LM servers on
	// loopback can reach it as a hub, across restarts; otherwise the LM side is "lm.test" on a fresh port.
	LMAddr       string
	Registration *mautrixappservice.Registration
	RegYAML      []byte
	// Extra are top-level config sections written over the generated ones (a mimi section, bridge permissions).
	Extra map[string]any

	homeserverURL string
	cmd           *exec.Cmd
	done          chan struct{}
	starts        int
}

// newLMBridge writes a config and generates the registration with the real `lmbridge -g`. The homeserver address is
// filled in by SetHomeserver, since the homeserver needs the registration before it starts.
func newLMBridge(t *testing.T, serverName string) *lmbridgeProcess {
	t.Helper()
	return newLMBridgeOn(t, serverName, sqliteDB)
}

// newLMBridgeOn is newLMBridge with lmbridge's tables on a fresh database of the given kind.
func newLMBridgeOn(t *testing.T, serverName string, kind dbKind) *lmbridgeProcess {
	t.Helper()
	return newLMBridgeOnAt(t, serverName, kind, "")
}

// newLMBridgeOnAt is newLMBridgeOn with the LM side at lmAddr (see lmbridgeProcess.LMAddr) when it is not empty.
func newLMBridgeOnAt(t *testing.T, serverName string, kind dbKind, lmAddr string) *lmbridgeProcess {
	t.Helper()
	dir := t.TempDir()
	port, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := &lmbridgeProcess{
		Bin:        lmbridgeBinary(t),
		Dir:        dir,
		ConfigPath: filepath.Join(dir, "config.yaml"),
		RegPath:    filepath.Join(dir, "registration.yaml"),
		LogPath:    filepath.Join(dir, "lmbridge.log"),
		Port:       port,
		ServerName: serverName,
		LMAddr:     lmAddr,
	}
	b.DBType, b.DBURI = newDatabase(t, kind, dir, "lmbridge")
	if kind == sqliteDB {
		b.DBPath = filepath.Join(dir, "lmbridge.db")
	}
	b.writeConfig(t, "http://127.0.0.1:1")
	out, err := exec.Command(b.Bin, "-g", "-c", b.ConfigPath, "-r", b.RegPath).CombinedOutput()
	if err != nil {
		t.Fatalf("lmbridge -g failed: %v\n%s", err, out)
	}
	if b.RegYAML, err = os.ReadFile(b.RegPath); err != nil {
		t.Fatal(err)
	}
	if b.Registration, err = mautrixappservice.LoadRegistration(b.RegPath); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		b.Stop(t)
		if t.Failed() {
			t.Logf("last lines of the lmbridge log:\n%s", fileTail(b.LogPath, 6000))
		} else if problems := logProblems(b.LogPath, 20); problems != "" {
			t.Logf("warnings and errors in the lmbridge log:\n%s", problems)
		}
	})
	return b
}

// newLMBridgeHub is newLMBridge (SQLite) as an LM hub other LM servers on loopback can reach: its LM server name is
// its listener's address, plain HTTP is allowed both ways, loopback is not blocked, and every user of the homeserver
// may link rooms.
func newLMBridgeHub(t *testing.T, serverName string) *lmbridgeProcess {
	t.Helper()
	port, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	b := newLMBridgeOnAt(t, serverName, sqliteDB, "127.0.0.1:"+strconv.Itoa(port))
	return b
}

func (b *lmbridgeProcess) writeConfig(t *testing.T, homeserverURL string) {
	t.Helper()
	lmPort, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	lm := map[string]any{
		"server_name":      "lm.test",
		"listen":           "127.0.0.1:" + strconv.Itoa(lmPort),
		"signing_key_path": filepath.Join(b.Dir, "lm.signing.key"),
		"allow_plain_http": true,
	}
	cfg := map[string]any{
		"homeserver": map[string]any{"address": homeserverURL, "domain": b.ServerName},
		"appservice": map[string]any{
			"address":  "http://127.0.0.1:" + strconv.Itoa(b.Port),
			"hostname": "127.0.0.1",
			"port":     b.Port,
		},
		"database": map[string]any{"type": b.DBType, "uri": b.DBURI},
		"lm":       lm,
		"logging":  map[string]any{"min_level": "debug", "format": "json"},
	}
	if b.LMAddr != "" {
		lm["server_name"], lm["listen"] = b.LMAddr, b.LMAddr
		lm["allow_http_peers"] = true
		lm["ip_range_blocklist"] = []string{}
		cfg["bridge"] = map[string]any{"permissions": map[string]string{b.ServerName: "admin"}}
	}
	for k, v := range b.Extra {
		cfg[k] = v
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(b.ConfigPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// SetHomeserver points the config at the running homeserver.
func (b *lmbridgeProcess) SetHomeserver(t *testing.T, hs *tesths.Homeserver) {
	t.Helper()
	b.homeserverURL = hs.URL
	b.writeConfig(t, hs.URL)
}

// Start runs lmbridge and waits until its ready endpoint says the homeserver checks passed.
func (b *lmbridgeProcess) Start(t *testing.T) {
	t.Helper()
	if b.cmd != nil {
		t.Fatal("lmbridge is already running")
	}
	logFile, err := os.OpenFile(b.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	b.starts++
	fmt.Fprintf(logFile, "\n===== start %d =====\n", b.starts)
	cmd := exec.Command(b.Bin, "-c", b.ConfigPath, "-r", b.RegPath)
	cmd.Dir = b.Dir
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err = cmd.Start(); err != nil {
		logFile.Close()
		t.Fatalf("failed to start lmbridge: %v", err)
	}
	b.cmd = cmd
	b.done = make(chan struct{})
	go func() {
		_ = cmd.Wait()
		logFile.Close()
		close(b.done)
	}()
	deadline := time.Now().Add(60 * time.Second)
	for {
		select {
		case <-b.done:
			b.cmd = nil
			t.Fatalf("lmbridge exited during start-up:\n%s", fileTail(b.LogPath, 4000))
		default:
		}
		resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/_matrix/mau/ready", b.Port))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("lmbridge not ready after 60 s:\n%s", fileTail(b.LogPath, 4000))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Kill ends lmbridge with SIGKILL: no shutdown code runs, as in a crash or an OOM kill.
func (b *lmbridgeProcess) Kill(t *testing.T) {
	t.Helper()
	b.signal(t, syscall.SIGKILL, 10*time.Second)
}

// Stop ends lmbridge with SIGTERM, as an operator would.
func (b *lmbridgeProcess) Stop(t *testing.T) {
	t.Helper()
	b.signal(t, syscall.SIGTERM, 15*time.Second)
}

func (b *lmbridgeProcess) signal(t *testing.T, sig syscall.Signal, grace time.Duration) {
	t.Helper()
	if b.cmd == nil {
		return
	}
	_ = syscall.Kill(b.cmd.Process.Pid, sig)
	select {
	case <-b.done:
	case <-time.After(grace):
		_ = syscall.Kill(-b.cmd.Process.Pid, syscall.SIGKILL)
		<-b.done
		t.Errorf("lmbridge did not exit within %s of %s", grace, sig)
	}
	b.cmd = nil
}

// openDB opens lmbridge's database beside the running process: a SQLite file read-only (WAL allows it), a
// PostgreSQL database through its URI. Queries on it use $n placeholders, which both engines take.
func (b *lmbridgeProcess) openDB(t *testing.T) *sql.DB {
	t.Helper()
	driver, uri := "postgres", b.DBURI
	if b.DBPath != "" {
		driver, uri = "sqlite3", "file:"+b.DBPath+"?mode=ro&_busy_timeout=5000"
	}
	db, err := sql.Open(driver, uri)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db
}

// streamRow is one event of a room's stream in dagview's tables.
type streamRow struct {
	Position   int64
	EventID    id.EventID
	Sender     id.UserID
	Type       string
	TS         int64
	Body       string
	Deliveries int
}

// dagviewStream reads a room's stream from dagview's table, in stream order.
func dagviewStream(t *testing.T, db *sql.DB, roomID id.RoomID) []streamRow {
	t.Helper()
	rows, err := db.Query(`SELECT position, event_id, sender, type, origin_server_ts, event_json, deliveries
		FROM dagview_event WHERE room_id=$1 ORDER BY position`, roomID)
	if err != nil {
		if isMissingTable(err) {
			return nil
		}
		t.Fatalf("failed to read dagview stream: %v", err)
	}
	defer rows.Close()
	var out []streamRow
	for rows.Next() {
		var r streamRow
		var raw string
		if err = rows.Scan(&r.Position, &r.EventID, &r.Sender, &r.Type, &r.TS, &raw, &r.Deliveries); err != nil {
			t.Fatal(err)
		}
		var evt struct {
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err = json.Unmarshal([]byte(raw), &evt); err != nil {
			t.Fatalf("stored event %s is not JSON: %v", r.EventID, err)
		}
		r.Body = evt.Content.Body
		out = append(out, r)
	}
	if err = rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// isMissingTable reports whether err says a table does not exist yet: lmbridge creates its tables at start-up, which
// a test may be polling through.
func isMissingTable(err error) bool {
	var pqErr *pq.Error
	if errors.As(err, &pqErr) {
		return pqErr.Code == "42P01" // undefined_table
	}
	return err != nil && strings.Contains(err.Error(), "no such table")
}

// waitUntil polls cond until it holds or timeout passes.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func fileTail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if info.Size() > n {
		_, _ = f.Seek(info.Size()-n, 0)
	}
	buf := make([]byte, n)
	m, _ := f.Read(buf)
	return string(buf[:m])
}

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// loggingContext gives ctx a logger that writes warnings and errors to the test's output and everything from debug
// up to a file, whose last lines the test prints if it fails: a timeout in a test of the in-process bridge says
// little without the bridge's and the engines' own account of what they were doing.
func loggingContext(ctx context.Context, t *testing.T) context.Context {
	t.Helper()
	path := filepath.Join(t.TempDir(), "bridge.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	toTest := &zerolog.FilteredLevelWriter{Writer: zerolog.LevelWriterAdapter{Writer: zerolog.NewTestWriter(t)},
		Level: zerolog.WarnLevel}
	log := zerolog.New(zerolog.MultiLevelWriter(toTest, f)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last lines of the in-process bridge's log (%s):\n%s", path, fileTail(path, 12000))
		}
		_ = f.Close()
	})
	return log.WithContext(ctx)
}

// logProblems returns up to max warning and error lines of a JSON log.
func logProblems(path string, max int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		if strings.Contains(line, `"level":"warn"`) || strings.Contains(line, `"level":"error"`) || strings.Contains(line, "panic") {
			out = append(out, line)
			if len(out) == max {
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
