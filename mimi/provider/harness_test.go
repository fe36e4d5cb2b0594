package provider

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/testpg"
	"github.com/lmbridge/lmbridge/mimi/content"
)

// testCA is a throwaway certificate authority for the providers of one test.
type testCA struct {
	key  *ecdsa.PrivateKey
	cert *x509.Certificate
	pool *x509.CertPool
}

func newCA(t testing.TB) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "MIMI test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), IsCA: true,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{key: key, cert: cert, pool: pool}
}

var serial = struct {
	sync.Mutex
	n int64
}{n: 2}

// issue makes a certificate for domain, good for TLS server and client authentication.
func (ca *testCA) issue(t testing.TB, domain string) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial.Lock()
	serial.n++
	sn := serial.n
	serial.Unlock()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(sn), Subject: pkix.Name{CommonName: domain}, DNSNames: []string{domain},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// recorder is the Callbacks of a test provider.
type recorder struct {
	mu       sync.Mutex
	msgs     []Message
	members  []Membership
	failNext int
	consents []Consent
	// hook, if set, sees every message as it arrives (benchmarks time them).
	hook func(Message)
}

func (r *recorder) OnConsent(_ context.Context, c Consent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.consents = append(r.consents, c)
	return nil
}

func (r *recorder) consentOps() []Consent {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.consents)
}

func (r *recorder) OnMessage(_ context.Context, m Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failNext > 0 {
		r.failNext--
		return errors.New("callback failing on purpose")
	}
	r.msgs = append(r.msgs, m)
	if r.hook != nil {
		r.hook(m)
	}
	return nil
}

func (r *recorder) OnMembership(_ context.Context, m Membership) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.members = append(r.members, m)
	return nil
}

func (r *recorder) messages() []Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.msgs)
}

func (r *recorder) membership() []Membership {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.members)
}

func (r *recorder) has(kind MembershipKind, user string) bool {
	return slices.ContainsFunc(r.membership(), func(m Membership) bool { return m.Kind == kind && m.User == user })
}

// net is the test's name service: provider domains to loopback ports.
type testNet struct {
	mu    sync.Mutex
	ports map[string]string
	ca    *testCA
	// postgres puts each provider in a database of its own on the shared PostgreSQL server instead of SQLite.
	postgres bool
}

func newNet(t testing.TB) *testNet { return &testNet{ports: map[string]string{}, ca: newCA(t)} }

func (n *testNet) locate(domain string) string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return "https://" + domain + ":" + n.ports[domain]
}

func (n *testNet) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", port))
}

// node is one provider instance with its own SQLite database.
type node struct {
	t      testing.TB
	n      *testNet
	domain string
	path   string
	db     *database.DB
	p      *Provider
	rec    *recorder
	cert   tls.Certificate
	pgURI  string
	// configure, if set, changes the provider's Config.
	configure func(*Config)
}

func testContext(t testing.TB) context.Context {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
	return log.WithContext(context.Background())
}

func (n *testNet) start(t testing.TB, domain string) *node {
	t.Helper()
	return n.startWith(t, domain, nil)
}

// startWith starts a provider whose Config configure changes (at every restart).
func (n *testNet) startWith(t testing.TB, domain string, configure func(*Config)) *node {
	t.Helper()
	nd := &node{t: t, n: n, domain: domain, path: filepath.Join(t.TempDir(), domain+".db"), rec: &recorder{}, cert: n.ca.issue(t, domain),
		configure: configure}
	if n.postgres {
		nd.pgURI = testpg.NewDatabaseT(t)
	}
	nd.restart()
	t.Cleanup(nd.stop)
	return nd
}

// restart opens the node's database and serves it again, on the same port as before.
func (nd *node) restart() {
	t := nd.t
	t.Helper()
	ctx := testContext(t)
	dbc := config.Database{Type: "sqlite3-fk-wal", URI: "file:" + nd.path + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 2}
	if nd.pgURI != "" {
		dbc = config.Database{Type: "postgres", URI: nd.pgURI, MaxOpenConns: 4, MaxIdleConns: 2}
	}
	db, err := database.Open(ctx, dbc)
	if err != nil {
		t.Fatal(err)
	}
	nd.n.mu.Lock()
	port := nd.n.ports[nd.domain]
	nd.n.mu.Unlock()
	listen := "127.0.0.1:0"
	if port != "" {
		listen = "127.0.0.1:" + port
	}
	cfg := Config{Domain: nd.domain, Listen: listen, TLS: &TLSConfig{Certificate: nd.cert, Roots: nd.n.ca.pool}, DB: db.Database,
		Callbacks: nd.rec, Locate: nd.n.locate, Dial: nd.n.dial, RetryMin: 10 * time.Millisecond, RetryMax: 200 * time.Millisecond}
	if nd.configure != nil {
		nd.configure(&cfg)
	}
	p, err := New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(ctx); err != nil {
		t.Fatal(err)
	}
	_, port, _ = net.SplitHostPort(p.Addr())
	nd.n.mu.Lock()
	nd.n.ports[nd.domain] = port
	nd.n.mu.Unlock()
	nd.db, nd.p = db, p
}

func (nd *node) stop() {
	if nd.p == nil {
		return
	}
	if err := nd.p.Close(); err != nil {
		nd.t.Errorf("closing %s: %v", nd.domain, err)
	}
	_ = nd.db.Close()
	nd.p, nd.db = nil, nil
}

func (nd *node) register(name, device string) (user, client string) {
	nd.t.Helper()
	c, err := nd.p.RegisterUser(testContext(nd.t), name, device)
	if err != nil {
		nd.t.Fatal(err)
	}
	return UserURI(nd.domain, name), c
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// text makes MIMI content: a markdown text message from sender in room.
func text(t testing.TB, sender, room, body string) []byte {
	t.Helper()
	salt, err := content.NewSalt(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	m := &content.Message{Salt: salt, Body: content.NestedPart{Disposition: 1, Part: &content.SinglePart{ContentType: "text/markdown;variant=GFM-MIMI", Content: []byte(body)}}}
	if err := m.SetExtension(content.IntKey(content.ExtSenderURI), sender); err != nil {
		t.Fatal(err)
	}
	if err := m.SetExtension(content.IntKey(content.ExtRoomURI), room); err != nil {
		t.Fatal(err)
	}
	b, err := m.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// bodyOf decodes received content back to its text.
func bodyOf(t testing.TB, b []byte) string {
	t.Helper()
	m, err := content.Decode(b)
	if err != nil {
		t.Fatalf("received content does not decode: %v", err)
	}
	sp, ok := m.Body.Part.(*content.SinglePart)
	if !ok {
		t.Fatalf("received content part %T", m.Body.Part)
	}
	return string(sp.Content)
}

func texts(t testing.TB, ms []Message) []string {
	out := make([]string, len(ms))
	for i, m := range ms {
		out[i] = fmt.Sprintf("%s: %s", m.Sender, bodyOf(t, m.Content))
	}
	return out
}

// epochAuth is a local client's epoch and authenticator in a room.
func (nd *node) epochAuth(room, client string) (uint64, string) {
	nd.t.Helper()
	g, err := nd.p.loadGroup(testContext(nd.t), room, client)
	if err != nil {
		nd.t.Fatal(err)
	}
	return g.Epoch(), fmt.Sprintf("%x", g.EpochAuthenticator())
}

func TestMain(m *testing.M) {
	code := m.Run()
	_ = testpg.StopShared()
	os.Exit(code)
}
