package e2e

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mautrixfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/internal/sqlitecap"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
)

// lockedBuffer is a log sink shared by lmbridge's goroutines and the test.
type lockedBuffer struct {
	lock sync.Mutex
	buf  strings.Builder
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.lock.Lock()
	defer b.lock.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.lock.Lock()
	defer b.lock.Unlock()
	return b.buf.String()
}

// lmbridge's database (one, as cmd/lmbridge has it: appservice, dagview, bridge and the LM engine) fills for 10 s while
// messages flow both ways between a real homeserver and an LM peer over HTTP; once space is back, every message
// arrives on the other side once, in order, and the log said the database was full.
func TestDiskFullUnderTraffic(t *testing.T) {
	tesths.ForEachKind(t, testDiskFullUnderTraffic)
}

func testDiskFullUnderTraffic(t *testing.T, kind tesths.Kind) {
	if testing.Short() {
		t.Skip("a homeserver and a 10 s fill")
	}
	logs := &lockedBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).Level(zerolog.WarnLevel)
	ctx := log.WithContext(context.Background())

	peer := &lmPeer{}
	peer.Engine = startLMEngine(ctx, t, "peer", sqliteDB, peer, nil)
	asPort, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Homeserver: config.Homeserver{Domain: tesths.DefaultServerName},
		AppService: config.AppService{Address: "http://127.0.0.1:" + strconv.Itoa(asPort), Hostname: "127.0.0.1",
			Port: uint16(asPort), ID: "lmbridge", Bot: config.Bot{Username: "lmbridge", Displayname: "LM bridge"},
			UsernameTemplate: "lm_{{.}}", AliasTemplate: "lm_{{.}}"},
		Bridge: config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{
			"*": "relay", "@alice:" + tesths.DefaultServerName: "user"}},
	}
	reg, err := appservice.GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	regYAML, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	hs := tesths.StartT(t, kind, tesths.Options{ServerName: tesths.DefaultServerName, Registrations: [][]byte{[]byte(regYAML)}})
	cfg.Homeserver.Address = hs.URL

	capped, err := sqlitecap.Open(ctx, filepath.Join(t.TempDir(), "lmbridge.db"), 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = capped.Close() })
	db := capped.Database
	as, err := appservice.New(appservice.Params{Homeserver: cfg.Homeserver, AppService: cfg.AppService, Registration: reg, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	view := dagview.New(as, db)
	if err = as.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err = view.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	eng, err := linearize.New(ctx, config.LM{ServerName: ln.Addr().String(), AllowPlainHTTP: true, AllowHTTPPeers: true},
		db, linearize.Options{SigningKey: mautrixfed.GenerateSigningKey(), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	users, err := bridge.NewUserMapper(cfg.Homeserver.Domain, eng.ServerName(), as.BotUserID(), cfg.AppService.UsernameTemplate)
	if err != nil {
		t.Fatal(err)
	}
	br, err := bridge.New(bridge.Params{Config: cfg.Bridge, DB: db, Users: users,
		Matrix: &bridge.MatrixAppService{AS: as, View: view}, LM: eng, Log: *zerolog.Ctx(ctx)})
	if err != nil {
		t.Fatal(err)
	}
	if err = br.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	eng.AddListener("bridge", br)
	if err = eng.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = eng.Stop(context.Background()) })
	view.SetListener(br)
	as.SetQueryHandler(br)
	if err = as.Start(ctx, view); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Stop)
	if err = as.CheckHomeserver(ctx); err != nil {
		t.Fatal(err)
	}
	bot := as.BotUserID()

	// alice links a room; bob of the peer joins it.
	alice := hs.RegisterUserT(t, "alice", "alice-password", false)
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Invite: []id.UserID{bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{alice.UserID: 100, bot: 100}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	waitUntil(t, 60*time.Second, "the bot to join", func() bool {
		members, err := alice.JoinedMembers(ctx, room)
		return err == nil && hasMember(members, bot)
	})
	sendText(ctx, t, alice, room, map[string]any{"msgtype": "m.text", "body": "!lm link"})
	var link *bridgedb.Link
	waitUntil(t, 60*time.Second, "the link", func() bool {
		link, _ = br.DB().GetLinkByDAGRoom(ctx, room)
		return link != nil
	})
	bob := "@bob:" + peer.ServerName()
	ghost, _ := users.GhostOf(bob)
	if _, err = alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: ghost}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's LM invite", func() bool { return peer.invited(link.LMRoomID, bob) })
	if _, err = peer.Join(ctx, link.LMRoomID, bob, link.HubServer); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "bob's ghost joining", func() bool {
		members, err := alice.JoinedMembers(ctx, room)
		return err == nil && hasMember(members, ghost)
	})
	rec := startSyncRecorder(ctx, t, alice, room)

	// Both send, about 5 a second each; the database is full from the 10th message for 10 s.
	const total = 60
	fullFrom, fullFor := 10, 10*time.Second
	var wg sync.WaitGroup
	var sendErr error
	var sendErrLock sync.Mutex
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := 0; i < total; i++ {
			txnID := fmt.Sprintf("diskfull-%d", i)
			for {
				_, err := alice.SendMessageEvent(ctx, room, event.EventMessage, map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("m2l-%04d", i)},
					mautrix.ReqSendEvent{TransactionID: txnID})
				if err == nil {
					break
				}
				time.Sleep(200 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	go func() {
		defer wg.Done()
		for i := 0; i < total; i++ {
			body := fmt.Sprintf("l2m-%04d", i)
			if _, err := peer.SendEventKeyed(ctx, link.LMRoomID, bob, "m.room.message", nil,
				map[string]any{"msgtype": "m.text", "body": body}, time.Time{}, body); err != nil {
				sendErrLock.Lock()
				sendErr = err
				sendErrLock.Unlock()
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	}()
	time.Sleep(time.Duration(fullFrom) * 200 * time.Millisecond)
	if err = capped.Fill(ctx, 2); err != nil {
		t.Fatal(err)
	}
	filledAt := time.Now()
	time.Sleep(fullFor)
	capped.Free()
	freedAt := time.Now()
	wg.Wait()
	if sendErr != nil {
		t.Fatalf("the peer failed to send: %v", sendErr)
	}

	count := func(bodies []string, prefix string) (lost, duplicated, reordered int) {
		seen := map[int]int{}
		last := -1
		for _, b := range bodies {
			if !strings.HasPrefix(b, prefix) {
				continue
			}
			n := seqOf(b)
			seen[n]++
			if seen[n] > 1 {
				duplicated++
			}
			if n < last {
				reordered++
			}
			last = max(last, n)
		}
		for i := 0; i < total; i++ {
			if seen[i] == 0 {
				lost++
			}
		}
		return lost, duplicated, reordered
	}
	matrixBodies := func() []string {
		var out []string
		for _, evt := range rec.timeline(t) {
			if evt.Sender == ghost {
				out = append(out, bodyOf(evt))
			}
		}
		return out
	}
	lmBodies := func() []string {
		var out []string
		for _, ev := range peer.roomEvents(link.LMRoomID) {
			out = append(out, lmBody(ev))
		}
		return out
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		l1, _, _ := count(matrixBodies(), "l2m-")
		l2, _, _ := count(lmBodies(), "m2l-")
		if l1 == 0 && l2 == 0 {
			break
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	arrived := time.Since(freedAt)
	time.Sleep(3 * time.Second) // for a late duplicate to show
	l2mLost, l2mDup, l2mReord := count(matrixBodies(), "l2m-")
	m2lLost, m2lDup, m2lReord := count(lmBodies(), "m2l-")
	full := strings.Count(logs.String(), "database is full")
	t.Logf("%s: %d messages each way, database full for %s from %s; LM → Matrix %d lost, %d duplicated, %d reordered; "+
		"Matrix → LM %d lost, %d duplicated, %d reordered; all arrived %s after space came back; %d log lines say the database is full",
		kind, total, fullFor, filledAt.Format("15:04:05.000"), l2mLost, l2mDup, l2mReord, m2lLost, m2lDup, m2lReord, arrived.Round(100*time.Millisecond), full)
	if l2mLost+l2mDup+l2mReord+m2lLost+m2lDup+m2lReord > 0 {
		t.Errorf("LM → Matrix %d lost, %d duplicated, %d reordered; Matrix → LM %d lost, %d duplicated, %d reordered",
			l2mLost, l2mDup, l2mReord, m2lLost, m2lDup, m2lReord)
	}
	if full == 0 {
		t.Errorf("no log line says the database is full")
	}
}
