//go:build goolm

package e2e

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	mautrixappservice "maunium.net/go/mautrix/appservice"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
	"github.com/lmbridge/lmbridge/linearize"
	"github.com/lmbridge/lmbridge/matrixcrypto"
)

// The encryption tests run lmbridge's parts in this process, wired as cmd/lmbridge wires them with encryption on,
// against a real homeserver and a peer LM server, and the Matrix users are matrix-js-sdk devices with its Rust crypto
// (e2e/jsclient): a client stack nobody here wrote decides whether what the bridge encrypts can be read.

// encStack is lmbridge with end-to-bridge encryption, restartable on the same database.
type encStack struct {
	t     *testing.T
	hs    *tesths.Homeserver
	cfg   *config.Config
	reg   *mautrixappservice.Registration
	db    *dbutil.Database
	users *bridge.UserMapper
	ours  *linearize.Engine
	peer  *lmPeer
	bot   id.UserID
	fwd   *swappableBridge

	// One run of the Matrix side: appservice, dagview, bridge and the bot's device.
	br     *bridge.Bridge
	crypto *matrixcrypto.Helper
	cancel context.CancelFunc
	as     *appservice.AppService
}

// swappableBridge forwards the LM engine's events to the bridge of the current run.
type swappableBridge struct{ br atomic.Pointer[bridge.Bridge] }

// errNoBridgeYet has the engine offer an event again once the first run's bridge is in place.
var errNoBridgeYet = errors.New("no bridge yet")

func (f *swappableBridge) OnEvent(ctx context.Context, evt *linearize.Event) error {
	if br := f.br.Load(); br != nil {
		return br.OnEvent(ctx, evt)
	}
	return errNoBridgeYet
}

func (f *swappableBridge) OnInvite(ctx context.Context, inv *linearize.Invite) error {
	if br := f.br.Load(); br != nil {
		return br.OnInvite(ctx, inv)
	}
	return errNoBridgeYet
}

func (f *swappableBridge) OnLPDUFailed(ctx context.Context, roomID, lpduID, reason string) {
	if br := f.br.Load(); br != nil {
		br.OnLPDUFailed(ctx, roomID, lpduID, reason)
	}
}

// testKeyWait is the key wait of the tests: short, so the undecryptable event's notice comes soon.
const testKeyWait = 3 * time.Second

func startEncStack(ctx context.Context, t *testing.T, kind tesths.Kind, dbk dbKind, opts ...func(*config.Encryption)) *encStack {
	t.Helper()
	st := &encStack{t: t, peer: &lmPeer{}, fwd: &swappableBridge{}}
	st.peer.Engine = startLMEngine(ctx, t, "peer", dbk, st.peer, nil)
	asPort, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	st.cfg = &config.Config{
		Homeserver: config.Homeserver{Domain: tesths.DefaultServerName},
		AppService: config.AppService{Address: "http://127.0.0.1:" + strconv.Itoa(asPort), Hostname: "127.0.0.1",
			Port: uint16(asPort), ID: "lmbridge", Bot: config.Bot{Username: "lmbridge", Displayname: "LM bridge"},
			UsernameTemplate: "lm_{{.}}", AliasTemplate: "lm_{{.}}"},
		Bridge: config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{
			"*": "relay", "@alice:" + tesths.DefaultServerName: "user"}},
		// Synapse refuses /sync to the bot (the appservice's sender), so there the device's traffic comes in
		// transactions (MSC2409, MSC3202); Dendrite has no such push, and the device syncs.
		Encryption: config.Encryption{Allow: true, Appservice: kind == tesths.Synapse, PickleKey: "e2e-pickle-key-0123456789", DeviceName: "lmbridge e2e",
			KeyWaitMillis: testKeyWait.Milliseconds(), AllowKeySharing: true,
			Verification: config.VerificationLevels{Receive: "unverified", Send: "unverified", Share: "unverified"}},
	}
	for _, opt := range opts {
		opt(&st.cfg.Encryption)
	}
	if err = st.cfg.Encryption.Validate(); err != nil {
		t.Fatal(err)
	}
	st.reg, err = appservice.GenerateRegistration(st.cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	regYAML, err := st.reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	st.hs = tesths.StartT(t, kind, tesths.Options{ServerName: tesths.DefaultServerName, Registrations: [][]byte{[]byte(regYAML)}})
	st.cfg.Homeserver.Address = st.hs.URL
	st.db = openBridgeDB(t, "lmbridge", dbk)
	st.bot = id.NewUserID(st.cfg.AppService.Bot.Username, tesths.DefaultServerName)
	st.ours = startLMEngine(ctx, t, "bridge", dbk, st.fwd, func(eng *linearize.Engine) {
		st.users, err = bridge.NewUserMapper(st.cfg.Homeserver.Domain, eng.ServerName(), st.bot, st.cfg.AppService.UsernameTemplate)
		if err != nil {
			t.Fatal(err)
		}
		st.ours = eng
	})
	st.start(ctx)
	t.Cleanup(st.stop)
	return st
}

// start runs the Matrix side on the stack's database, as cmd/lmbridge's run does.
func (st *encStack) start(ctx context.Context) {
	t := st.t
	t.Helper()
	runCtx, cancel := context.WithCancel(ctx)
	st.cancel = cancel
	as, err := appservice.New(appservice.Params{Homeserver: st.cfg.Homeserver, AppService: st.cfg.AppService,
		Registration: st.reg, DB: st.db})
	if err != nil {
		t.Fatal(err)
	}
	st.as = as
	view := dagview.New(as, st.db)
	if err = as.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err = view.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	st.br, err = bridge.New(bridge.Params{Config: st.cfg.Bridge, DB: st.db, Users: st.users,
		Matrix: &bridge.MatrixAppService{AS: as, View: view}, LM: st.ours, Log: *zerolog.Ctx(ctx)})
	if err != nil {
		t.Fatal(err)
	}
	if err = st.br.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	st.br.SetEncryption(st.cfg.Encryption)
	st.crypto, err = matrixcrypto.New(runCtx, matrixcrypto.Params{Config: st.cfg.Encryption, AS: as, DB: st.db,
		RoomState: view.StateEvents, NotBridged: st.br.NotifyNotBridged, Linked: st.br.IsLinked})
	if err != nil {
		t.Fatal(err)
	}
	if err = st.crypto.Start(runCtx); err != nil {
		t.Fatal(err)
	}
	st.fwd.br.Store(st.br)
	view.SetListener(st.crypto.Listener(st.br))
	as.SetQueryHandler(st.br)
	if err = as.Start(runCtx, view); err != nil {
		t.Fatal(err)
	}
	if err = as.CheckHomeserver(runCtx); err != nil {
		t.Fatal(err)
	}
}

// stop ends the Matrix side's run, as a SIGTERM would.
func (st *encStack) stop() {
	if st.cancel == nil {
		return
	}
	st.cancel()
	st.as.Stop()
	st.crypto.Stop()
	st.cancel = nil
}

func (st *encStack) restart(ctx context.Context) {
	st.t.Helper()
	st.stop()
	st.start(ctx)
}

func TestEncryptedRoomsWithMatrixJSSDK(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) { testEncryptedRooms(t, kind, sqliteDB) })
}

func testEncryptedRooms(t *testing.T, kind tesths.Kind, dbk dbKind) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).WithContext(ctx)
	st := startEncStack(ctx, t, kind, dbk)
	alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
	phone := startJSClient(t, "alice-phone")
	phone.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"})
	firstDevice := st.crypto.DeviceID()
	if firstDevice == "" {
		t.Fatal("the bot has no device")
	}

	// An encrypted room from the start, as Matrix clients make private rooms: linking it works.
	room := id.RoomID(str(phone.must("createRoom", map[string]any{"name": "Encrypted", "encrypted": true,
		"invite": []string{string(st.bot)}}), "roomId"))
	phone.must("waitJoined", map[string]any{"roomId": room, "userId": st.bot, "timeoutMs": 60000})
	raisePower(ctx, t, alice, room, st.bot)
	phone.must("send", map[string]any{"roomId": room, "body": "!lm link"})
	link := waitLink(ctx, t, st, room)
	answer := phone.must("waitMessage", map[string]any{"roomId": room, "contains": link.LMRoomID, "timeoutMs": 60000})
	if answer["encrypted"] != true || id.UserID(str(answer, "sender")) != st.bot {
		t.Errorf("the bot's answer to the link command: %v, want it encrypted from the bot", answer)
	}
	bob := "@bob:" + st.peer.ServerName()
	ghost, _ := st.users.GhostOf(bob)
	phone.must("invite", map[string]any{"roomId": room, "userId": ghost})
	peerJoin(ctx, t, st, link, bob)
	phone.must("waitJoined", map[string]any{"roomId": room, "userId": ghost, "timeoutMs": 60000})

	exchange(ctx, t, st, phone, link, bob, "before restart")

	// A restart keeps the device, and both directions keep working.
	st.restart(ctx)
	if got := st.crypto.DeviceID(); got != firstDevice {
		t.Fatalf("the bot's device after the restart is %s, was %s", got, firstDevice)
	}
	exchange(ctx, t, st, phone, link, bob, "after restart")

	// A new device of alice's gets the keys of what LM sends from then on.
	laptop := startJSClient(t, "alice-laptop")
	laptopDevice := str(laptop.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"}), "deviceId")
	// The bot's device hears of the new device through its /sync (device_lists.changed) and then rotates the room's
	// session; what LM sends after that is encrypted for the new device too.
	waitUntil(t, 60*time.Second, "the bot's device to know alice's new device", func() bool {
		var n int
		err := st.db.QueryRow(ctx, "SELECT COUNT(*) FROM crypto_device WHERE user_id=$1 AND device_id=$2",
			alice.UserID, laptopDevice).Scan(&n)
		return err == nil && n == 1
	})
	sendLM(ctx, t, st, link, bob, "hello new device")
	for _, c := range []*jsClient{laptop, phone} {
		got := c.must("waitMessage", map[string]any{"roomId": room, "body": "hello new device", "timeoutMs": 60000})
		if got["encrypted"] != true || id.UserID(str(got, "sender")) != ghost {
			t.Errorf("%s read %v, want an encrypted message from %s", c.name, got, ghost)
		}
	}
	// And what the new device sends reaches LM.
	laptop.must("send", map[string]any{"roomId": room, "body": "from the laptop"})
	findLM(t, st.peer, "the laptop's message on LM", func(ev *linearize.Event) bool {
		return ev.RoomID == link.LMRoomID && lmBody(ev) == "from the laptop"
	})

	// An event whose key never comes: the bridge waits, asks, and tells the room.
	bogus := sendUndecryptable(ctx, t, alice, room)
	notice := phone.must("waitMessage", map[string]any{"roomId": room, "contains": "could not be bridged", "timeoutMs": 60000})
	if id.UserID(str(notice, "sender")) != st.bot || notice["encrypted"] != true {
		t.Errorf("the undecryptable event's notice: %v", notice)
	}
	if ev := st.peer.find(func(ev *linearize.Event) bool { return strings.Contains(string(ev.Content), string(bogus)) }); ev != nil {
		t.Errorf("something of the undecryptable event reached LM: %s", ev.Content)
	}

	// Turning encryption on in a linked room: what follows is bridged both ways, encrypted on Matrix.
	plain := id.RoomID(str(phone.must("createRoom", map[string]any{"name": "Plain", "encrypted": false,
		"invite": []string{string(st.bot)}}), "roomId"))
	phone.must("waitJoined", map[string]any{"roomId": plain, "userId": st.bot, "timeoutMs": 60000})
	raisePower(ctx, t, alice, plain, st.bot)
	phone.must("send", map[string]any{"roomId": plain, "body": "!lm link"})
	plainLink := waitLink(ctx, t, st, plain)
	phone.must("invite", map[string]any{"roomId": plain, "userId": ghost})
	peerJoin(ctx, t, st, plainLink, bob)
	phone.must("waitJoined", map[string]any{"roomId": plain, "userId": ghost, "timeoutMs": 60000})
	phone.must("send", map[string]any{"roomId": plain, "body": "plain before"})
	findLM(t, st.peer, "the plaintext message on LM", func(ev *linearize.Event) bool {
		return ev.RoomID == plainLink.LMRoomID && lmBody(ev) == "plain before"
	})
	phone.must("enableEncryption", map[string]any{"roomId": plain, "rotationMsgs": 3})
	exchange(ctx, t, st, phone, plainLink, bob, "encryption turned on")

	// The room asks for a new session every 3 messages: the bot's device follows, and alice reads on.
	first := outboundSession(ctx, t, st, plain)
	for i := range 3 {
		sendLM(ctx, t, st, plainLink, bob, "rotation "+strconv.Itoa(i))
	}
	for i := range 3 {
		got := phone.must("waitMessage", map[string]any{"roomId": plain, "body": "rotation " + strconv.Itoa(i), "timeoutMs": 60000})
		if got["encrypted"] != true {
			t.Errorf("rotation message %d read as %v", i, got)
		}
	}
	if now := outboundSession(ctx, t, st, plain); now == first {
		t.Errorf("the outbound session %s was not rotated after 4 messages with rotation_period_msgs 3", first)
	}
}

// outboundSession is the bot device's current outbound Megolm session in the room.
func outboundSession(ctx context.Context, t *testing.T, st *encStack, room id.RoomID) string {
	t.Helper()
	var session string
	if err := st.db.QueryRow(ctx, "SELECT session_id FROM crypto_megolm_outbound_session WHERE room_id=$1", room).Scan(&session); err != nil {
		t.Fatalf("failed to read the outbound session of %s: %v", room, err)
	}
	return session
}

// exchange checks both directions in an encrypted linked room: alice's encrypted message reaches LM in clear, and
// bob's LM message reaches alice's device encrypted and decrypts there.
func exchange(ctx context.Context, t *testing.T, st *encStack, c *jsClient, link *bridgedb.Link, bob, tag string) {
	t.Helper()
	exchangeIn(ctx, t, st, c, link, bob, tag, true)
}

// exchangeIn is exchange in a room that is encrypted or not.
func exchangeIn(ctx context.Context, t *testing.T, st *encStack, c *jsClient, link *bridgedb.Link, bob, tag string, encrypted bool) {
	t.Helper()
	fromMatrix := "from matrix, " + tag
	sent := c.must("send", map[string]any{"roomId": link.DAGRoomID, "body": fromMatrix})
	ev := findLM(t, st.peer, "alice's message on LM ("+tag+")", func(ev *linearize.Event) bool {
		return ev.RoomID == link.LMRoomID && lmBody(ev) == fromMatrix
	})
	if ev.Type != "m.room.message" {
		t.Errorf("alice's message reached LM as %s", ev.Type)
	}
	// The homeserver has it encrypted: the clear text on LM came from the bridge's decryption.
	// Dendrite's SQLite answers 500 now and then when busy ("database is locked"), so the read is retried.
	var raw *event.Event
	var err error
	waitUntil(t, 30*time.Second, "alice's event from the homeserver", func() bool {
		raw, err = st.as.Client().GetEvent(ctx, link.DAGRoomID, id.EventID(str(sent, "eventId")))
		return err == nil
	})
	if (raw.Type == event.EventEncrypted) != encrypted {
		t.Errorf("alice's message is %s on the homeserver, want it encrypted: %v", raw.Type.Type, encrypted)
	}
	fromLM := "from LM, " + tag
	eventID := sendLM(ctx, t, st, link, bob, fromLM)
	got := c.must("waitMessage", map[string]any{"roomId": link.DAGRoomID, "body": fromLM, "timeoutMs": 60000})
	ghost, _ := st.users.GhostOf(bob)
	if got["encrypted"] != encrypted || id.UserID(str(got, "sender")) != ghost {
		t.Errorf("bob's LM message %s read by alice as %v, want encrypted %v from %s", eventID, got, encrypted, ghost)
	}
}

func sendLM(ctx context.Context, t *testing.T, st *encStack, link *bridgedb.Link, sender, body string) string {
	t.Helper()
	eventID, err := st.peer.SendEvent(ctx, link.LMRoomID, sender, "m.room.message", nil,
		map[string]any{"msgtype": "m.text", "body": body}, time.Time{})
	if err != nil {
		t.Fatalf("peer failed to send %q: %v", body, err)
	}
	return eventID
}

func waitLink(ctx context.Context, t *testing.T, st *encStack, room id.RoomID) *bridgedb.Link {
	t.Helper()
	var link *bridgedb.Link
	waitUntil(t, 60*time.Second, "the link of "+string(room), func() bool {
		link, _ = st.br.DB().GetLinkByDAGRoom(ctx, room)
		return link != nil
	})
	return link
}

// peerJoin waits for the peer's invite of user to the link's LM room and joins it.
func peerJoin(ctx context.Context, t *testing.T, st *encStack, link *bridgedb.Link, user string) {
	t.Helper()
	waitUntil(t, 60*time.Second, "the LM invite of "+user, func() bool {
		return st.peer.invited(link.LMRoomID, user) || st.peer.find(func(ev *linearize.Event) bool {
			return ev.RoomID == link.LMRoomID && ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == user
		}) != nil
	})
	if _, err := st.peer.Join(ctx, link.LMRoomID, user, link.HubServer); err != nil {
		t.Fatalf("%s failed to join: %v", user, err)
	}
}

// raisePower gives the bot the power linking needs, in a room the js client made with default power levels.
func raisePower(ctx context.Context, t *testing.T, admin *mautrix.Client, room id.RoomID, bot id.UserID) {
	t.Helper()
	var pl event.PowerLevelsEventContent
	if err := admin.StateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
	pl.SetUserLevel(bot, 100)
	if _, err := admin.SendStateEvent(ctx, room, event.StatePowerLevels, "", &pl); err != nil {
		t.Fatal(err)
	}
}

// sendUndecryptable sends, as alice over plain HTTP, an m.room.encrypted event of a Megolm session nobody has.
func sendUndecryptable(ctx context.Context, t *testing.T, alice *mautrix.Client, room id.RoomID) id.EventID {
	t.Helper()
	content := map[string]any{
		"algorithm":  "m.megolm.v1.aes-sha2",
		"sender_key": "sQ2f8g3ygW6yjpcu8lbIGQkdzW/hYh2iTPNaWG3b0T0",
		"device_id":  "NOSUCHDEVICE",
		"session_id": "NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN",
		"ciphertext": "AwgAEnBZjTlHO0t/JvQ+pHWnTb9l+OjWnhfLxHcL6Yp6hgH2PvN+5x7s6dX0xVq2T1pBv7xE4vX7VYgn7qJz6R8Q2xrgLm6Y0n1xAhWmqkF0Zl4A",
	}
	resp, err := alice.SendMessageEvent(ctx, room, event.EventEncrypted, content)
	if err != nil {
		t.Fatal(err)
	}
	return resp.EventID
}

// TestEncryptedRoomsOnPostgreSQL keeps the crypto store (and everything else) on PostgreSQL.
func TestEncryptedRoomsOnPostgreSQL(t *testing.T) {
	testpg.RequireT(t)
	tesths.RequireKind(t, tesths.Dendrite)
	testEncryptedRooms(t, tesths.Dendrite, postgresDB)
}

// TestEncryptionSyncRefusedOnSynapse: Synapse refuses /sync to the appservice's sender (the bot), so without
// encryption.appservice the device's start stops with ErrSyncRefused, which says what to set, rather than syncing in
// vain.
func TestEncryptionSyncRefusedOnSynapse(t *testing.T) {
	tesths.RequireKind(t, tesths.Synapse)
	ctx := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel).WithContext(context.Background())
	asPort, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Homeserver: config.Homeserver{Domain: tesths.DefaultServerName},
		AppService: config.AppService{Address: "http://127.0.0.1:" + strconv.Itoa(asPort), Hostname: "127.0.0.1",
			Port: uint16(asPort), ID: "lmbridge", Bot: config.Bot{Username: "lmbridge"},
			UsernameTemplate: "lm_{{.}}", AliasTemplate: "lm_{{.}}"},
		Encryption: config.Encryption{Allow: true, PickleKey: "e2e-pickle-key-0123456789", DeviceName: "lmbridge e2e",
			KeyWaitMillis: 1000, Verification: config.VerificationLevels{Receive: "unverified", Send: "unverified",
				Share: "unverified"}},
	}
	reg, err := appservice.GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	regYAML, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	hs := tesths.StartT(t, tesths.Synapse, tesths.Options{Registrations: [][]byte{[]byte(regYAML)}})
	cfg.Homeserver.Address = hs.URL
	db := openBridgeDB(t, "lmbridge", sqliteDB)
	as, err := appservice.New(appservice.Params{Homeserver: cfg.Homeserver, AppService: cfg.AppService, Registration: reg, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err = as.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	view := dagview.New(as, db)
	helper, err := matrixcrypto.New(ctx, matrixcrypto.Params{Config: cfg.Encryption, AS: as, DB: db,
		RoomState: view.StateEvents, NotBridged: func(context.Context, *event.Event, error) error { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	err = helper.Start(ctx)
	if !errors.Is(err, matrixcrypto.ErrSyncRefused) {
		helper.Stop()
		t.Fatalf("Start on Synapse without appservice mode = %v, want ErrSyncRefused", err)
	}
	t.Logf("refused as expected: %v", err)
}
