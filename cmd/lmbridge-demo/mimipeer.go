package main

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/mimi/provider"
)

// The demo's MIMI domains: lmbridge's provider and the second provider the demo runs in its own process. Neither
// resolves; each reaches the other on loopback by its port.
const (
	bridgeMIMIDomain = "lmbridge.mimi.localhost"
	peerMIMIDomain   = "peer.mimi.localhost"
)

// mimiPeer is a second MIMI provider standing for another messaging service: lmbridge's real mimi/provider on its
// own port and database, with one user, bob, who says hello when he is added to a room and answers every message.
type mimiPeer struct {
	p    *provider.Provider
	db   *database.DB
	user string
	ctx  context.Context

	lock     sync.Mutex
	received []string
}

// startMIMIPeer starts the peer provider with a certificate of ca; the bridge's provider is at bridgePort.
func startMIMIPeer(ctx context.Context, dir string, ca *testca.CA, bridgePort int) (*mimiPeer, error) {
	db, err := database.Open(ctx, config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(dir, "mimi-peer.db") + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 2})
	if err != nil {
		return nil, fmt.Errorf("failed to open the demo MIMI provider's database: %w", err)
	}
	files, err := ca.WriteFiles(dir, peerMIMIDomain)
	if err != nil {
		db.Close()
		return nil, err
	}
	tlsCfg, err := provider.LoadTLS(files.Cert, files.Key, files.CA)
	if err != nil {
		db.Close()
		return nil, err
	}
	mp := &mimiPeer{db: db, user: provider.UserURI(peerMIMIDomain, peerUser), ctx: ctx}
	mp.p, err = provider.New(ctx, provider.Config{Domain: peerMIMIDomain, Listen: "127.0.0.1:0", TLS: tlsCfg, DB: db.Database,
		Callbacks: mp,
		Locate: func(domain string) string {
			return "https://" + domain + ":" + strconv.Itoa(bridgePort)
		},
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			_, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			var d net.Dialer
			return d.DialContext(ctx, network, "127.0.0.1:"+port)
		}})
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to set up the demo MIMI provider: %w", err)
	}
	if _, err = mp.p.RegisterUser(ctx, peerUser, "phone"); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to register the demo MIMI user: %w", err)
	}
	if err = mp.p.Start(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to start the demo MIMI provider: %w", err)
	}
	return mp, nil
}

// port is the peer provider's listening port.
func (mp *mimiPeer) port() int {
	_, port, _ := net.SplitHostPort(mp.p.Addr())
	n, _ := strconv.Atoi(port)
	return n
}

func (mp *mimiPeer) stop() error {
	err := mp.p.Close()
	if cerr := mp.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// OnMessage answers every text message from someone else.
func (mp *mimiPeer) OnMessage(_ context.Context, m provider.Message) error {
	if m.Sender == mp.user {
		return nil
	}
	msg, err := content.Decode(m.Content)
	if err != nil {
		zerolog.Ctx(mp.ctx).Warn().Err(err).Msg("The demo MIMI user got content that does not decode")
		return nil
	}
	sp, ok := msg.Body.Part.(*content.SinglePart)
	if !ok || msg.InReplyTo != nil || msg.Replaces != nil || strings.HasPrefix(string(sp.Content), "!") {
		return nil
	}
	text := string(sp.Content)
	mp.lock.Lock()
	mp.received = append(mp.received, text)
	mp.lock.Unlock()
	go mp.say(m.Room, fmt.Sprintf("%s heard %s say: %s", mp.user, m.Sender, text))
	return nil
}

// OnMembership says hello when bob's client joins a room.
func (mp *mimiPeer) OnMembership(_ context.Context, m provider.Membership) error {
	if m.Kind == provider.LocalJoined && m.User == mp.user {
		go mp.say(m.Room, "Hello from "+mp.user+", on the MIMI provider "+peerMIMIDomain+". Say something and I answer.")
	}
	return nil
}

func (mp *mimiPeer) say(room, text string) {
	log := zerolog.Ctx(mp.ctx).With().Str("room", room).Logger()
	salt, err := content.NewSalt(nil)
	if err != nil {
		log.Warn().Err(err).Msg("Demo MIMI user could not draw a salt")
		return
	}
	m := &content.Message{Salt: salt, TopicID: []byte{}, Body: content.NestedPart{Disposition: content.DispositionRender,
		Part: &content.SinglePart{ContentType: content.TypePlainText, Content: []byte(text)}}}
	enc, err := m.Encode()
	if err == nil {
		_, err = mp.p.Send(mp.ctx, room, mp.user, enc)
	}
	if err != nil {
		log.Warn().Err(err).Msg("Demo MIMI user could not send")
	}
}

// heard says whether bob received a message with this body.
func (mp *mimiPeer) heard(body string) bool {
	mp.lock.Lock()
	defer mp.lock.Unlock()
	for _, b := range mp.received {
		if b == body {
			return true
		}
	}
	return false
}
