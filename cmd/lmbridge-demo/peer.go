package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/linearize"
)

// peerUser is the localpart of the one user of the demo's LM server.
const peerUser = "bob"

// lmPeer is a second LM server, in the demo's own process, standing for another provider: lmbridge's real LM engine
// on its own port and database. Its user bob joins the rooms he is invited to, says hello, and answers every message
// from someone else, so a Matrix user sees the conversation cross both ways.
type lmPeer struct {
	engine *linearize.Engine
	db     *database.DB
	user   string
	ctx    context.Context

	lock     sync.Mutex
	handled  map[string]bool // event and invite IDs, since delivery is at least once
	received []string        // bodies of messages from others, for the check
}

func startPeer(ctx context.Context, dir string) (*lmPeer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the demo LM server: %w", err)
	}
	serverName := ln.Addr().String()
	db, err := database.Open(ctx, config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(dir, "peer.db") + "?_txlock=immediate", MaxOpenConns: 1, MaxIdleConns: 2})
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("failed to open the demo LM server's database: %w", err)
	}
	p := &lmPeer{db: db, user: "@" + peerUser + ":" + serverName, ctx: ctx, handled: make(map[string]bool)}
	p.engine, err = linearize.New(ctx, config.LM{
		ServerName:     serverName,
		AllowPlainHTTP: true,
		AllowHTTPPeers: true,
		SigningKeyPath: filepath.Join(dir, "peer.signing.key"),
	}, db.Database, linearize.Options{Listener: ln})
	if err != nil {
		ln.Close()
		db.Close()
		return nil, fmt.Errorf("failed to set up the demo LM server: %w", err)
	}
	p.engine.AddListener("demo", p)
	if err := p.engine.Start(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("failed to start the demo LM server: %w", err)
	}
	return p, nil
}

func (p *lmPeer) stop() error {
	err := p.engine.Stop(context.Background())
	if cerr := p.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// firstTime records id and says whether it is new.
func (p *lmPeer) firstTime(id string) bool {
	p.lock.Lock()
	defer p.lock.Unlock()
	if p.handled[id] {
		return false
	}
	p.handled[id] = true
	return true
}

// OnInvite joins bob to the room and says hello. It runs in the background: the engine's dispatcher must not wait
// on a join that needs the dispatcher.
func (p *lmPeer) OnInvite(_ context.Context, inv *linearize.Invite) error {
	if inv.Target != p.user || !p.firstTime("invite:"+inv.EventID) {
		return nil
	}
	hub := inv.HubServer
	if hub == "" {
		// LM room IDs keep the hub's server name after the colon.
		_, hub, _ = strings.Cut(inv.RoomID, ":")
	}
	go func() {
		log := zerolog.Ctx(p.ctx).With().Str("room_id", inv.RoomID).Str("hub", hub).Logger()
		if _, err := p.engine.Join(p.ctx, inv.RoomID, p.user, hub); err != nil {
			log.Warn().Err(err).Msg("Demo LM user could not join")
			return
		}
		log.Info().Str("user", p.user).Msg("Demo LM user joined the LM room")
		p.say(inv.RoomID, "Hello from "+p.user+", on the LM server "+p.engine.ServerName()+". Say something and I answer.")
	}()
	return nil
}

// OnEvent answers every message from someone else in a room bob is in.
func (p *lmPeer) OnEvent(_ context.Context, evt *linearize.Event) error {
	if evt.Type != "m.room.message" || evt.Sender == p.user || !p.firstTime(evt.EventID) {
		return nil
	}
	var content struct {
		Body string `json:"body"`
	}
	if json.Unmarshal(evt.Content, &content) != nil || content.Body == "" || strings.HasPrefix(content.Body, "!") {
		return nil
	}
	p.lock.Lock()
	p.received = append(p.received, content.Body)
	p.lock.Unlock()
	go p.say(evt.RoomID, fmt.Sprintf("%s heard %s say: %s", p.user, evt.Sender, content.Body))
	return nil
}

func (p *lmPeer) OnLPDUFailed(_ context.Context, roomID, lpduID, reason string) {
	zerolog.Ctx(p.ctx).Warn().Str("room_id", roomID).Str("lpdu_id", lpduID).Str("reason", reason).
		Msg("The hub refused a message of the demo LM user")
}

func (p *lmPeer) say(roomID, body string) {
	_, err := p.engine.SendEvent(p.ctx, roomID, p.user, "m.room.message",
		nil, map[string]any{"msgtype": "m.text", "body": body}, time.Time{})
	if err != nil {
		zerolog.Ctx(p.ctx).Warn().Err(err).Str("room_id", roomID).Msg("Demo LM user could not send")
	}
}

// heard says whether bob received a message with this body.
func (p *lmPeer) heard(body string) bool {
	p.lock.Lock()
	defer p.lock.Unlock()
	for _, b := range p.received {
		if b == body {
			return true
		}
	}
	return false
}
