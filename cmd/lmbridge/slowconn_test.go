package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	mautrixfederation "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// runAsMainEnv makes the test binary run lmbridge's main instead of the tests, so that a test can start lmbridge as a
// process of its own (the same code as the built binary) without building it.
const runAsMainEnv = "LMBRIDGE_TEST_RUN_AS_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runAsMainEnv) == "1" {
		os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// lmbridgeProc is lmbridge running as a process of its own, with both listeners up. Its homeserver address points
// at a closed port: start-up then waits for the homeserver forever, retrying, while both listeners serve.
type lmbridgeProc struct {
	cmd        *exec.Cmd
	dir        string
	asAddr     string
	lmAddr     string
	serverName string
	hsToken    string
	logPath    string
	done       chan struct{}
	// fedScheme is http, or https when the federation listener has a certificate.
	fedScheme string
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startLMBridgeProc starts lmbridge; with useTLS its federation listener has a self-signed certificate for
// 127.0.0.1.
func startLMBridgeProc(t testing.TB, useTLS bool) *lmbridgeProc {
	t.Helper()
	dir := t.TempDir()
	p := &lmbridgeProc{dir: dir, asAddr: freeAddr(t), lmAddr: freeAddr(t), serverName: "lm.test",
		logPath: filepath.Join(dir, "lmbridge.log"), done: make(chan struct{}), fedScheme: "http"}
	_, asPort, _ := net.SplitHostPort(p.asAddr)
	port, _ := strconv.Atoi(asPort)
	cfg := map[string]any{
		"homeserver": map[string]any{"address": "http://127.0.0.1:1", "domain": "hs.test"},
		"appservice": map[string]any{"address": "http://" + p.asAddr, "hostname": "127.0.0.1", "port": port},
		"database":   map[string]any{"type": "sqlite3-fk-wal", "uri": "file:" + filepath.Join(dir, "lmbridge.db") + "?_txlock=immediate"},
		"lm": map[string]any{
			"server_name":        p.serverName,
			"listen":             p.lmAddr,
			"signing_key_path":   filepath.Join(dir, "lm.signing.key"),
			"allow_plain_http":   true,
			"allow_http_peers":   true,
			"ip_range_blocklist": []string{},
		},
		"logging": map[string]any{"min_level": "info", "format": "json"},
	}
	if useTLS {
		lm := cfg["lm"].(map[string]any)
		lm["tls_cert"], lm["tls_key"] = writeSelfSignedCert(t, dir)
		delete(lm, "allow_plain_http")
		p.fedScheme = "https"
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfgPath, regPath := filepath.Join(dir, "config.yaml"), filepath.Join(dir, "registration.yaml")
	if err = os.WriteFile(cfgPath, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := cli([]string{"-g", "-c", cfgPath, "-r", regPath}, &stdout, &stderr); code != exitOK {
		t.Fatalf("-g: exit %d: %s", code, stderr.String())
	}
	reg, err := appservice.ReadRegistration(regPath)
	if err != nil {
		t.Fatal(err)
	}
	p.hsToken = reg.ServerToken
	logFile, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(os.Args[0], "-c", cfgPath, "-r", regPath)
	p.cmd.Env = append(os.Environ(), runAsMainEnv+"=1")
	p.cmd.Dir = dir
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err = p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		_ = p.cmd.Wait()
		_ = logFile.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(15 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			log, _ := os.ReadFile(p.logPath)
			t.Logf("lmbridge log (last 4000 bytes):\n%s", log[max(0, len(log)-4000):])
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	client := insecureClient(5 * time.Second)
	for _, url := range []string{"http://" + p.asAddr + "/_matrix/mau/live", p.fedScheme + "://" + p.lmAddr + "/_matrix/key/v2/server"} {
		for {
			resp, err := client.Get(url)
			if err == nil {
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					break
				}
			}
			select {
			case <-p.done:
				t.Fatal("lmbridge exited during start-up")
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s does not answer after 30 s", url)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return p
}

// procStatus reads a field of /proc/PID/status in KiB (VmRSS, VmHWM).
func procStatus(t testing.TB, pid int, field string) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			kib, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			return kib
		}
	}
	t.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}

func openFDs(pid int) int {
	entries, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	return len(entries)
}

// raiseFileLimit lifts this process's open-file limit to its hard limit: the test holds thousands of sockets.
func raiseFileLimit(t testing.TB, need uint64) {
	t.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Fatal(err)
	}
	if lim.Cur < lim.Max {
		lim.Cur = lim.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
			t.Fatal(err)
		}
	}
	if lim.Cur < need {
		t.Skipf("open-file limit %d is below the %d the test needs", lim.Cur, need)
	}
}

// slowConn is a connection that has sent its headers and sends its body a byte at a time.
type slowConn struct {
	conn   net.Conn
	opened time.Time
	// closed is closed once the server has closed the connection; closedAt says when.
	closed   chan struct{}
	closedAt time.Time
}

// openSlowConns opens n connections to addr from the given local addresses in turn, each sending head (request line
// and headers, Content-Length included) and the first byte of its body. A goroutine per connection waits for the
// server to close it.
func openSlowConns(t testing.TB, addr string, useTLS bool, n int, from []string, head func(i int) string) []*slowConn {
	t.Helper()
	conns := make([]*slowConn, 0, n)
	for i := range n {
		local, err := net.ResolveTCPAddr("tcp", from[i%len(from)]+":0")
		if err != nil {
			t.Fatal(err)
		}
		dialer := net.Dialer{LocalAddr: local, Timeout: 5 * time.Second}
		conn, err := dialer.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		if useTLS {
			tlsConn := tls.Client(conn, &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
			if err = tlsConn.Handshake(); err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			conn = tlsConn
		}
		sc := &slowConn{conn: conn, opened: time.Now(), closed: make(chan struct{})}
		t.Cleanup(func() { _ = conn.Close() })
		if _, err = io.WriteString(conn, head(i)+"{"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
		go func() {
			// Whatever the server answers, the connection counts as closed once reading it fails.
			_, _ = io.Copy(io.Discard, conn)
			sc.closedAt = time.Now()
			close(sc.closed)
		}()
		conns = append(conns, sc)
	}
	return conns
}

// trickle writes a space (valid inside JSON) to every open connection every interval until stop is closed.
func trickle(conns []*slowConn, interval time.Duration, stop <-chan struct{}) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-stop:
			return
		case <-ticker.C:
		}
		for _, sc := range conns {
			select {
			case <-sc.closed:
				continue
			default:
			}
			_ = sc.conn.SetWriteDeadline(time.Now().Add(100 * time.Millisecond))
			_, _ = sc.conn.Write([]byte(" "))
		}
	}
}

// insecureClient is an HTTP client that trusts any certificate: lmbridge's is the test's own, self-signed.
func insecureClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
}

// writeSelfSignedCert writes a certificate and key for 127.0.0.1 into dir and returns their paths.
func writeSelfSignedCert(t testing.TB, dir string) (certPath, keyPath string) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "lmbridge test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err = os.WriteFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err = os.WriteFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPath, keyPath
}

// goodServer is an LM server of the test's own: it publishes its key on loopback and signs its requests.
type goodServer struct {
	name string
	key  *federation.SigningKey
}

func startGoodServer(t testing.TB) *goodServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &goodServer{name: ln.Addr().String(), key: mautrixfederation.GenerateSigningKey()}
	srv := httptest.NewUnstartedServer(federation.NewKeyServer(g.name, g.key))
	_ = srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	t.Cleanup(srv.Close)
	return g
}

// slowFigures is what one run of the slow-connection scenario measured.
type slowFigures struct {
	conns             int
	heldFDs           int
	rssBeforeKiB      int64
	rssHeldKiB        int64
	peakKiB           int64
	rssAfterKiB       int64
	latencies         []time.Duration
	failures          []string
	closedWithin      time.Duration
	stillOpen         int
	closedConnections int
}

// runSlowConnections holds n slow-body connections on each of lmbridge's listeners at once (federation connections
// from n/50 loopback addresses, since each address may hold only 64 unauthenticated requests; application-service
// connections with the homeserver's token, from 127.0.0.1), sends good requests with a 1 s client timeout while
// they are held, and with waitClose waits for lmbridge to close the slow connections.
func runSlowConnections(t testing.TB, p *lmbridgeProc, n int, waitClose time.Duration) *slowFigures {
	t.Helper()
	raiseFileLimit(t, uint64(2*n+256))
	good := startGoodServer(t)
	pid := p.cmd.Process.Pid
	fig := &slowFigures{conns: 2 * n, rssBeforeKiB: procStatus(t, pid, "VmRSS")}

	var fedFrom []string
	for i := range (n + 49) / 50 {
		fedFrom = append(fedFrom, fmt.Sprintf("127.0.%d.%d", 1+i/250, 1+i%250))
	}
	// The largest body each listener accepts, so that a buffer sized from Content-Length would be the largest.
	fedConns := openSlowConns(t, p.lmAddr, p.fedScheme == "https", n, fedFrom, func(i int) string {
		return fmt.Sprintf("PUT /_matrix/federation/v1/send/slow%d HTTP/1.1\r\nHost: %s\r\n"+
			"Authorization: X-Matrix origin=\"slow%d.test\",destination=\"%s\",key=\"ed25519:a\",sig=\"c2lnbmF0dXJl\"\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", i, p.lmAddr, i%len(fedFrom), p.serverName, federation.DefaultMaxRequestBytes)
	})
	asConns := openSlowConns(t, p.asAddr, false, n, []string{"127.0.0.1"}, func(i int) string {
		return fmt.Sprintf("PUT /_matrix/app/v1/transactions/slow%d HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
			"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n", i, p.asAddr, p.hsToken, 16<<20)
	})
	all := append(slices.Clip(fedConns), asConns...)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() { trickle(all, time.Second, stop) })
	defer func() { close(stop); wg.Wait() }()

	// Let every connection reach its handler, then see that lmbridge holds them all.
	time.Sleep(2 * time.Second)
	fig.heldFDs = openFDs(pid)
	closedEarly := 0
	for _, sc := range all {
		select {
		case <-sc.closed:
			closedEarly++
		default:
		}
	}
	if closedEarly > 0 {
		fig.failures = append(fig.failures, fmt.Sprintf("%d slow connections were closed within 2 s, not held", closedEarly))
	}

	client := insecureClient(time.Second)
	for i := range 10 {
		start := time.Now()
		if err := goodTransaction(client, p, fmt.Sprintf("good%d", i)); err != nil {
			fig.failures = append(fig.failures, "application service: "+err.Error())
		}
		fig.latencies = append(fig.latencies, time.Since(start))
		start = time.Now()
		if err := goodFederationSend(client, p, good, fmt.Sprintf("good%d", i)); err != nil {
			fig.failures = append(fig.failures, "federation: "+err.Error())
		}
		fig.latencies = append(fig.latencies, time.Since(start))
	}
	fig.rssHeldKiB = procStatus(t, pid, "VmRSS")
	fig.peakKiB = procStatus(t, pid, "VmHWM")

	if waitClose > 0 {
		deadline := time.After(waitClose)
	wait:
		for _, sc := range all {
			select {
			case <-sc.closed:
				fig.closedWithin = max(fig.closedWithin, sc.closedAt.Sub(sc.opened))
				fig.closedConnections++
			case <-deadline:
				break wait
			}
		}
		fig.stillOpen = len(all) - fig.closedConnections
		// lmbridge gives a flood's memory back a second after it is over.
		time.Sleep(3 * time.Second)
		fig.rssAfterKiB = procStatus(t, pid, "VmRSS")
	}
	return fig
}

// goodTransaction PUTs an empty transaction with the homeserver's token and wants 200.
func goodTransaction(client *http.Client, p *lmbridgeProc, txnID string) error {
	req, err := http.NewRequest(http.MethodPut, "http://"+p.asAddr+"/_matrix/app/v1/transactions/"+txnID, strings.NewReader(`{"events":[]}`))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+p.hsToken)
	return wantOK(client.Do(req))
}

// goodFederationSend PUTs an empty transaction signed by good and wants 200.
func goodFederationSend(client *http.Client, p *lmbridgeProc, good *goodServer, txnID string) error {
	uri := federation.UnstablePrefix + "/send/" + txnID
	body := []byte(`{"pdus":[]}`)
	auth, err := federation.SignRequest(good.key, good.name, p.serverName, http.MethodPut, uri, body)
	if err != nil {
		return err
	}
	req, err := http.NewRequest(http.MethodPut, p.fedScheme+"://"+p.lmAddr+uri, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", auth)
	req.Header.Set("Content-Type", "application/json")
	return wantOK(client.Do(req))
}

func wantOK(resp *http.Response, err error) error {
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(bufio.NewReader(io.LimitReader(resp.Body, 4096)))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	return nil
}

func (f *slowFigures) latencyPercentile(p float64) time.Duration {
	if len(f.latencies) == 0 {
		return 0
	}
	sorted := slices.Clone(f.latencies)
	slices.Sort(sorted)
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// maxSlowRSSKiB is the bound: 200 MB with 2,000 slow connections on each listener.
const maxSlowRSSKiB = 200 * 1000

// TestSlowConnectionsOnBothListeners is the scenario against lmbridge as a process of its own: 2,000
// slow-body connections held on each listener. lmbridge's peak RSS stays under 200 MB, good requests on both
// listeners are answered 200 with a 1 s client timeout while they are held, lmbridge closes every slow connection
// once its read timeout (30 s) has passed, and then gives most of the memory they took back to the system.
func TestSlowConnectionsOnBothListeners(t *testing.T) {
	if testing.Short() {
		t.Skip("holds 4,000 connections for about 35 s")
	}
	p := startLMBridgeProc(t, false)
	fig := runSlowConnections(t, p, 2000, 45*time.Second)
	t.Logf("%d slow connections: lmbridge fds %d, RSS %d KiB before, %d KiB held, peak %d KiB, %d KiB after they closed; "+
		"good requests p50 %s, max %s; all closed within %s",
		fig.conns, fig.heldFDs, fig.rssBeforeKiB, fig.rssHeldKiB, fig.peakKiB, fig.rssAfterKiB,
		fig.latencyPercentile(0.5), fig.latencyPercentile(1), fig.closedWithin)
	for _, f := range fig.failures {
		t.Error(f)
	}
	if fig.heldFDs < fig.conns {
		t.Errorf("lmbridge has %d files open, fewer than the %d slow connections: they were not held", fig.heldFDs, fig.conns)
	}
	if fig.peakKiB > maxSlowRSSKiB {
		t.Errorf("lmbridge's peak RSS is %d KiB with %d slow connections, over %d KiB", fig.peakKiB, fig.conns, maxSlowRSSKiB)
	}
	if fig.stillOpen > 0 {
		t.Errorf("%d of %d slow connections still open 45 s after they were opened", fig.stillOpen, fig.conns)
	} else if mid := (fig.rssBeforeKiB + fig.rssHeldKiB) / 2; fig.rssAfterKiB > mid {
		t.Errorf("lmbridge's RSS is %d KiB 3 s after the slow connections closed, over %d KiB, half way from idle to held: "+
			"their memory was not given back", fig.rssAfterKiB, mid)
	}
}

// BenchmarkSlowConnections reports lmbridge's memory and the latency of good requests with n slow-body connections
// held on each listener, for several n; run it with -benchtime=1x (each iteration is a whole scenario, about 15 s).
// LMBRIDGE_SLOW_CONNS=500,2000 picks the counts; LMBRIDGE_SLOW_TLS=1 serves federation over TLS.
func BenchmarkSlowConnections(b *testing.B) {
	counts := []int{500, 2000, 4000}
	if env := os.Getenv("LMBRIDGE_SLOW_CONNS"); env != "" {
		counts = nil
		for field := range strings.SplitSeq(env, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(field))
			if err != nil {
				b.Fatalf("LMBRIDGE_SLOW_CONNS: %v", err)
			}
			counts = append(counts, n)
		}
	}
	useTLS := os.Getenv("LMBRIDGE_SLOW_TLS") == "1"
	for _, n := range counts {
		b.Run(fmt.Sprintf("per-listener=%d", n), func(b *testing.B) {
			for range b.N {
				p := startLMBridgeProc(b, useTLS)
				fig := runSlowConnections(b, p, n, 0)
				for _, f := range fig.failures {
					b.Error(f)
				}
				b.ReportMetric(float64(fig.rssBeforeKiB)/1024, "idle-RSS-MiB")
				b.ReportMetric(float64(fig.rssHeldKiB)/1024, "held-RSS-MiB")
				b.ReportMetric(float64(fig.peakKiB)/1024, "peak-RSS-MiB")
				b.ReportMetric(float64(fig.rssHeldKiB-fig.rssBeforeKiB)/float64(fig.conns), "KiB/conn")
				b.ReportMetric(float64(fig.latencyPercentile(0.5).Microseconds())/1000, "good-p50-ms")
				b.ReportMetric(float64(fig.latencyPercentile(1).Microseconds())/1000, "good-max-ms")
			}
		})
	}
}
