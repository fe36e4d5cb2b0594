package e2e

import (
	"context"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	mautrixfed "maunium.net/go/mautrix/federation"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
	"github.com/lmbridge/lmbridge/media"
)

// bridgeNode is one lmbridge (appservice, dagview, LM engine and bridge, in this process, wired as cmd/lmbridge wires
// them) on a real homeserver of its own. Two of them linked through LM are what two providers running lmbridge are.
type bridgeNode struct {
	hs    *tesths.Homeserver
	br    *bridge.Bridge
	users *bridge.UserMapper
	ours  *linearize.Engine
	bot   id.UserID
	prov  string
	// lmDB holds the engine's tables.
	lmDB *dbutil.Database
	// db holds the bridge's, the appservice's and the media tables.
	db *dbutil.Database
	// media carries files, as cmd/lmbridge wires it.
	media *media.Mapper
}

// nodeOption changes a bridgeNode's config before it starts.
type nodeOption func(*config.Config)

func startBridgeNode(ctx context.Context, t *testing.T, kind tesths.Kind, serverName string, opts ...nodeOption) *bridgeNode {
	t.Helper()
	n := &bridgeNode{}
	asPort, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Homeserver: config.Homeserver{Domain: serverName},
		AppService: config.AppService{Address: "http://127.0.0.1:" + strconv.Itoa(asPort), Hostname: "127.0.0.1",
			Port: uint16(asPort), ID: "lmbridge", Bot: config.Bot{Username: "lmbridge", Displayname: "LM bridge"},
			UsernameTemplate: "lm_{{.}}", AliasTemplate: "lm_{{.}}"},
		Bridge: config.Bridge{CommandPrefix: "!lm", Permissions: map[string]string{"*": "relay", serverName: "user"},
			Provisioning: config.Provisioning{SharedSecret: provisioningSecret}},
	}
	for _, opt := range opts {
		opt(cfg)
	}
	reg, err := appservice.GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	regYAML, err := reg.YAML()
	if err != nil {
		t.Fatal(err)
	}
	n.hs = tesths.StartT(t, kind, tesths.Options{ServerName: serverName, Registrations: [][]byte{[]byte(regYAML)}})
	cfg.Homeserver.Address = n.hs.URL
	db := openBridgeDB(t, "lmbridge", sqliteDB)
	n.db = db
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
	n.bot = as.BotUserID()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n.lmDB = openBridgeDB(t, "lm", sqliteDB)
	n.ours, err = linearize.New(ctx, config.LM{ServerName: ln.Addr().String(), AllowPlainHTTP: true, AllowHTTPPeers: true},
		n.lmDB, linearize.Options{SigningKey: mautrixfed.GenerateSigningKey(), Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	if n.users, err = bridge.NewUserMapper(serverName, n.ours.ServerName(), n.bot, cfg.AppService.UsernameTemplate); err != nil {
		t.Fatal(err)
	}
	n.media, err = media.New(media.Params{Config: cfg.Media, HomeserverDomain: serverName,
		LMServerName: string(n.ours.ServerName()), DB: db, AS: as, Fetcher: n.ours.NewMediaClient()})
	if err != nil {
		t.Fatal(err)
	}
	if err = n.media.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	if err = n.ours.ServeMedia(n.media.Source()); err != nil {
		t.Fatal(err)
	}
	n.br, err = bridge.New(bridge.Params{Config: cfg.Bridge, DB: db, Users: n.users,
		Matrix: &bridge.MatrixAppService{AS: as, View: view}, LM: n.ours, Media: n.media, Log: *zerolog.Ctx(ctx)})
	if err != nil {
		t.Fatal(err)
	}
	if err = n.br.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	n.ours.AddListener("bridge", n.br)
	if err = n.ours.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.ours.Stop(context.Background()) })
	view.SetListener(n.br)
	as.SetQueryHandler(n.br)
	if err = as.Start(ctx, view); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Stop)
	if err = as.CheckHomeserver(ctx); err != nil {
		t.Fatal(err)
	}
	prov := httptest.NewServer(n.br.ProvisioningHandler())
	t.Cleanup(prov.Close)
	n.prov = prov.URL
	return n
}

// user registers a user with a display name (and an avatar when not empty).
func (n *bridgeNode) user(ctx context.Context, t *testing.T, localpart, displayname string, avatar id.ContentURI) *mautrix.Client {
	t.Helper()
	c := n.hs.RegisterUserT(t, localpart, localpart+"-password", false)
	if err := c.SetDisplayName(ctx, displayname); err != nil {
		t.Fatal(err)
	}
	if !avatar.IsEmpty() {
		if err := c.SetAvatarURL(ctx, avatar); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// room creates a room as c with the bot invited at botLevel, and waits for the bot to join.
func (n *bridgeNode) room(ctx context.Context, t *testing.T, c *mautrix.Client, preset string, botLevel int) id.RoomID {
	t.Helper()
	created, err := c.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: preset, Name: "bridgefix", Invite: []id.UserID{n.bot},
		PowerLevelOverride: &event.PowerLevelsEventContent{Users: map[id.UserID]int{c.UserID: 100, n.bot: botLevel}}})
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, 60*time.Second, "the bot to join", func() bool {
		members, err := c.JoinedMembers(ctx, created.RoomID)
		return err == nil && hasMember(members, n.bot)
	})
	return created.RoomID
}

// ask sends a command as c and returns the bot's answer to it.
func (n *bridgeNode) ask(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, command string) string {
	t.Helper()
	cmd := sendText(ctx, t, c, room, map[string]any{"msgtype": "m.text", "body": command})
	answer := findDAG(ctx, t, c, room, "the bot's answer to "+command, func(evt *event.Event) bool {
		return evt.Sender == n.bot && replyTarget(rawContent(evt)) == string(cmd)
	})
	return bodyOf(answer)
}

func (n *bridgeNode) lmRooms(t *testing.T) int {
	t.Helper()
	var count int
	if err := n.lmDB.QueryRow(context.Background(), "SELECT COUNT(*) FROM lm_room").Scan(&count); err != nil {
		t.Fatal(err)
	}
	return count
}

// TestBridgeLinkNeedsBotPower: on a real homeserver, `!lm link` in a room where the bot has power level 0 is refused
// before anything is made, with an answer that says what the bot needs; once it has that, the same room links and
// carries m.bridge. The provisioning API refuses such a room with 403 M_FORBIDDEN.
func TestBridgeLinkNeedsBotPower(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		ctx := testContext(t)
		ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx)
		n := startBridgeNode(ctx, t, kind, tesths.DefaultServerName)
		alice := n.user(ctx, t, "alice", "Alice", id.ContentURI{})
		room := n.room(ctx, t, alice, "public_chat", 0)
		answer := n.ask(ctx, t, alice, room, "!lm link")
		for _, want := range []string{"Could not link", string(n.bot) + " has power level 0", "needs 50",
			"m.bridge", "Give " + string(n.bot) + " power level 50"} {
			if !strings.Contains(answer, want) {
				t.Errorf("answer %q does not say %q", answer, want)
			}
		}
		if l, _ := n.br.DB().GetLinkByDAGRoom(ctx, room); l != nil {
			t.Fatalf("the refused link left %+v", l)
		}
		if count := n.lmRooms(t); count != 0 {
			t.Fatalf("the refused link created %d LM rooms", count)
		}
		// The provisioning API refuses the same room.
		req, _ := http.NewRequestWithContext(ctx, http.MethodPost, n.prov+bridge.ProvisioningPrefix+"/links",
			strings.NewReader(`{"dag_room_id": "`+string(room)+`"}`))
		req.Header.Set("Authorization", "Bearer "+provisioningSecret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusForbidden || body.ErrCode != "M_FORBIDDEN" || !strings.Contains(body.Error, "power level 50") {
			t.Errorf("provisioning a room where the bot has 0 = %d %+v", resp.StatusCode, body)
		}
		// alice makes the bot a moderator: the room links, with its m.bridge marker.
		if _, err = alice.SendStateEvent(ctx, room, event.StatePowerLevels, "", map[string]any{
			"users": map[string]any{string(alice.UserID): 100, string(n.bot): 50}}); err != nil {
			t.Fatal(err)
		}
		// dagview may not have the new levels yet when the next command arrives: ask until the answer is a link.
		var link *bridgedb.Link
		waitUntil(t, 60*time.Second, "the link once the bot has 50", func() bool {
			answer = n.ask(ctx, t, alice, room, "!lm link")
			link, _ = n.br.DB().GetLinkByDAGRoom(ctx, room)
			return link != nil
		})
		if !strings.Contains(answer, link.LMRoomID) {
			t.Errorf("link answer = %q", answer)
		}
		waitUntil(t, 30*time.Second, "m.bridge in the room", func() bool {
			var content map[string]any
			err := alice.StateEvent(ctx, room, event.StateBridge, "org.lmbridge://lm/"+link.HubServer+"/"+link.LMRoomID, &content)
			channel, _ := content["channel"].(map[string]any)
			return err == nil && channel["id"] == link.LMRoomID
		})
	})
}

// memberEvents are the m.room.member events of user in a room's timeline, oldest first, with the timeline index of
// the first message user sent (-1 if none).
func memberEvents(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, user id.UserID) ([]map[string]any, int) {
	t.Helper()
	var out []map[string]any
	firstMessage := -1
	for _, evt := range roomTimeline(ctx, t, c, room) {
		switch {
		case evt.Type == event.StateMember && evt.StateKey != nil && id.UserID(*evt.StateKey) == user:
			out = append(out, rawContent(evt))
		case evt.Type == event.EventMessage && evt.Sender == user && firstMessage < 0:
			firstMessage = len(out)
		}
	}
	return out, firstMessage
}

// checkFirstJoin checks that ghost's first join in the room, and every member event of it before its first message,
// has the display name (and avatar) wanted.
func checkFirstJoin(ctx context.Context, t *testing.T, c *mautrix.Client, room id.RoomID, ghost id.UserID, name, avatar string) {
	t.Helper()
	var events []map[string]any
	waitUntil(t, 60*time.Second, ghost.String()+" joining "+room.String(), func() bool {
		events, _ = memberEvents(ctx, t, c, room, ghost)
		for _, e := range events {
			if e["membership"] == "join" {
				return true
			}
		}
		return false
	})
	for _, e := range events {
		if e["membership"] != "join" {
			continue
		}
		if e["displayname"] != name || (avatar != "" && e["avatar_url"] != avatar) {
			t.Errorf("the first join of %s in %s is %v, want display name %q and avatar %q (all its member events: %v)",
				ghost, room, e, name, avatar, events)
		}
		return
	}
}

// TestBridgeGhostProfileAtFirstJoin runs two lmbridges, each on its own real homeserver (Dendrite and Synapse, both
// ways round), linked through LM. A Matrix user of one appears on the other as a ghost whose first join already has
// their display name and avatar, and so does every later member event up to their first message: the user who links
// the second room, a user who joins it later, and the user of a portal made for an LM invite, whose inviter's ghost
// creates the portal with the inviter's name.
func TestBridgeGhostProfileAtFirstJoin(t *testing.T) {
	for _, pair := range [][2]tesths.Kind{{tesths.Dendrite, tesths.Synapse}, {tesths.Synapse, tesths.Dendrite}} {
		t.Run(string(pair[0])+" hub, "+string(pair[1])+" participant", func(t *testing.T) {
			tesths.RequireKind(t, pair[0])
			tesths.RequireKind(t, pair[1])
			testGhostProfileAtFirstJoin(t, pair[0], pair[1])
		})
	}
}

func testGhostProfileAtFirstJoin(t *testing.T, hubKind, partKind tesths.Kind) {
	ctx := testContext(t)
	ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx)
	a := startBridgeNode(ctx, t, hubKind, "hs1.localhost")
	b := startBridgeNode(ctx, t, partKind, "hs2.localhost")
	ghostOn := func(on, of *bridgeNode, user id.UserID) id.UserID {
		lmUser, err := of.users.LMUserOf(user)
		if err != nil {
			t.Fatal(err)
		}
		ghost, err := on.users.GhostOf(lmUser)
		if err != nil {
			t.Fatal(err)
		}
		return ghost
	}

	// alice links a room on A, which A hosts on LM.
	alice := a.user(ctx, t, "alice", "Alice from A", id.ContentURI{})
	roomA := a.room(ctx, t, alice, "public_chat", 100)
	if answer := a.ask(ctx, t, alice, roomA, "!lm link"); !strings.HasPrefix(answer, "Linked") {
		t.Fatalf("alice's link answer = %q", answer)
	}
	linkA, err := a.br.DB().GetLinkByDAGRoom(ctx, roomA)
	if err != nil || linkA == nil {
		t.Fatalf("alice's link: %v, %v", linkA, err)
	}

	// bea links a room on B to it: her ghost on A joins with her name and avatar (a copy on A of hers).
	bea := b.user(ctx, t, "bea", "Bea from B", id.ContentURI{})
	beaAvatar := uploadT(ctx, t, bea, testPNG(t, 24, 24, 7), "image/png", "bea.png")
	if err = bea.SetAvatarURL(ctx, beaAvatar); err != nil {
		t.Fatal(err)
	}
	roomB := b.room(ctx, t, bea, "public_chat", 100)
	if answer := b.ask(ctx, t, bea, roomB, "!lm link "+linkA.LMRoomID+" via "+linkA.HubServer); !strings.HasPrefix(answer, "Linked") {
		t.Fatalf("bea's link answer = %q", answer)
	}
	checkFirstJoin(ctx, t, alice, roomA, ghostOn(a, b, bea.UserID), "Bea from B", copyOn(t, a, b, beaAvatar))

	// cid joins bea's room later and talks: his ghost on A has his name from its first join to his first message.
	cid := b.user(ctx, t, "cid", "Cid from B", id.ContentURI{})
	if _, err = cid.JoinRoomByID(ctx, roomB); err != nil {
		t.Fatal(err)
	}
	sendText(ctx, t, cid, roomB, map[string]any{"msgtype": "m.text", "body": "hello from cid"})
	cidGhost := ghostOn(a, b, cid.UserID)
	findDAG(ctx, t, alice, roomA, "cid's message on A", func(evt *event.Event) bool {
		return evt.Sender == cidGhost && bodyOf(evt) == "hello from cid"
	})
	checkFirstJoin(ctx, t, alice, roomA, cidGhost, "Cid from B", "")
	events, firstMessage := memberEvents(ctx, t, alice, roomA, cidGhost)
	for _, e := range events[:max(firstMessage, 0)] {
		if e["displayname"] != "Cid from B" {
			t.Errorf("a member event of cid's ghost before his first message is %v", e)
		}
	}

	// fay, on A, links a second room and invites dan of B, who is in no room of it yet: B makes a portal, created by
	// fay's ghost, which has her name at once; dan joins it, and his ghost joins fay's room on A with his name.
	fay := a.user(ctx, t, "fay", "Fay from A", id.ContentURI{})
	room2 := a.room(ctx, t, fay, "private_chat", 100)
	if answer := a.ask(ctx, t, fay, room2, "!lm link"); !strings.HasPrefix(answer, "Linked") {
		t.Fatalf("fay's link answer = %q", answer)
	}
	dan := b.user(ctx, t, "dan", "Dan from B", id.ContentURI{})
	danGhost := ghostOn(a, b, dan.UserID)
	if _, err = fay.InviteUser(ctx, room2, &mautrix.ReqInviteUser{UserID: danGhost}); err != nil {
		t.Fatal(err)
	}
	portal := joinInvitedRoom(ctx, t, dan, "dan's invite to the portal")
	checkFirstJoin(ctx, t, dan, portal, ghostOn(b, a, fay.UserID), "Fay from A", "")
	checkFirstJoin(ctx, t, fay, room2, danGhost, "Dan from B", "")
}
