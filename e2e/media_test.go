package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// mediaLimit is the media.max_file_bytes of both bridges in the media test: large enough for its images, small
// enough for a file over it to be cheap.
const mediaLimit = 200 << 10

func withMediaLimit(n int64) nodeOption {
	return func(cfg *config.Config) { cfg.Media = config.Media{MaxFileBytes: n} }
}

// testPNG draws a w×h picture that differs with seed, so two of them never share bytes.
func testPNG(t *testing.T, w, h int, seed uint64) []byte {
	t.Helper()
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{R: uint8(rng.UintN(256)), G: uint8(x * 255 / w), B: uint8(y * 255 / h), A: 255})
		}
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, img); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func uploadT(ctx context.Context, t *testing.T, c *mautrix.Client, data []byte, mimetype, name string) id.ContentURI {
	t.Helper()
	resp, err := c.UploadMedia(ctx, mautrix.ReqUploadMedia{ContentBytes: data, ContentType: mimetype, FileName: name})
	if err != nil {
		t.Fatalf("failed to upload %s as %s: %v", name, c.UserID, err)
	}
	return resp.ContentURI
}

// downloadAs fetches a file from c's homeserver as c, by the authenticated media API or, where the homeserver lacks
// it, the legacy one: what a client opening the file does.
func downloadAs(ctx context.Context, c *mautrix.Client, uri string) ([]byte, string, error) {
	parsed, err := id.ParseContentURI(uri)
	if err != nil {
		return nil, "", err
	}
	var lastErr error
	for _, path := range []mautrix.PrefixableURLPath{
		mautrix.ClientURLPath{"v1", "media", "download", parsed.Homeserver, parsed.FileID},
		mautrix.MediaURLPath{"v3", "download", parsed.Homeserver, parsed.FileID},
	} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.BuildURL(path), nil)
		if err != nil {
			return nil, "", err
		}
		req.Header.Set("Authorization", "Bearer "+c.AccessToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, "", err
		}
		data, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, "", err
		}
		if resp.StatusCode == http.StatusOK {
			return data, resp.Header.Get("Content-Type"), nil
		}
		lastErr = fmt.Errorf("GET %s: HTTP %d %s", req.URL.Path, resp.StatusCode, data)
	}
	return nil, "", lastErr
}

// sameFile checks that uri, fetched from c's homeserver, is want, and is a copy on c's homeserver.
func sameFile(ctx context.Context, t *testing.T, c *mautrix.Client, what, uri string, want []byte, mimetype string) {
	t.Helper()
	if parsed, err := id.ParseContentURI(uri); err != nil || parsed.Homeserver != c.UserID.Homeserver() {
		t.Errorf("%s is %q, want a file on %s", what, uri, c.UserID.Homeserver())
		return
	}
	got, gotType, err := downloadAs(ctx, c, uri)
	if err != nil {
		t.Errorf("%s (%s) does not open for %s: %v", what, uri, c.UserID, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s (%s) has %d bytes that differ from the %d sent", what, uri, len(got), len(want))
	}
	if mimetype != "" && !strings.HasPrefix(gotType, mimetype) {
		t.Errorf("%s (%s) is served as %q, want %q", what, uri, gotType, mimetype)
	}
}

// copyOn waits for the copy node on made of a file of node of, and returns its URI.
func copyOn(t *testing.T, on, of *bridgeNode, uri id.ContentURI) string {
	t.Helper()
	origin := id.ContentURI{Homeserver: string(of.ours.ServerName()), FileID: uri.FileID}.String()
	var local string
	waitUntil(t, 60*time.Second, "the copy of "+origin+" on "+on.hs.ServerName, func() bool {
		err := on.db.QueryRow(context.Background(), "SELECT local_uri FROM media_file WHERE origin_uri=$1", origin).Scan(&local)
		return err == nil
	})
	return local
}

func mediaRows(t *testing.T, n *bridgeNode, of *bridgeNode) int {
	t.Helper()
	var count int
	if err := n.db.QueryRow(context.Background(), "SELECT COUNT(*) FROM media_file WHERE origin_uri LIKE $1",
		"mxc://"+string(of.ours.ServerName())+"/%").Scan(&count); err != nil {
		t.Fatal(err)
	}
	return count
}

// imageContent is an m.image with a thumbnail, as Element sends one.
func imageContent(body string, img, thumb []byte, imgURI, thumbURI id.ContentURI) map[string]any {
	return map[string]any{"msgtype": "m.image", "body": body, "url": imgURI.String(),
		"info": map[string]any{"mimetype": "image/png", "size": len(img), "w": 64, "h": 48,
			"thumbnail_url":  thumbURI.String(),
			"thumbnail_info": map[string]any{"mimetype": "image/png", "size": len(thumb), "w": 16, "h": 12}}}
}

// TestMediaAcrossHomeservers runs two lmbridges, each on its own real homeserver (Dendrite and Synapse, both ways
// round), which reach each other only over LM, a user on each. Images with thumbnails open on the other side (the
// bytes a client downloads there are the bytes sent), with their size and mimetype; a file is fetched once however
// often it is sent; a file over the limit gets its sender a notice, whether the sender's bridge knows its size or the
// other bridge finds out when fetching it; avatars and display names are on the ghosts from their first join and
// follow a change; and the federation media API answers bad requests with Matrix errors.
func TestMediaAcrossHomeservers(t *testing.T) {
	for _, pair := range [][2]tesths.Kind{{tesths.Dendrite, tesths.Synapse}, {tesths.Synapse, tesths.Dendrite}} {
		t.Run(string(pair[0])+" hub, "+string(pair[1])+" participant", func(t *testing.T) {
			tesths.RequireKind(t, pair[0])
			tesths.RequireKind(t, pair[1])
			testMediaAcrossHomeservers(t, pair[0], pair[1])
		})
	}
}

func testMediaAcrossHomeservers(t *testing.T, hubKind, partKind tesths.Kind) {
	ctx := testContext(t)
	ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx)
	a := startBridgeNode(ctx, t, hubKind, "hs1.localhost", withMediaLimit(mediaLimit))
	b := startBridgeNode(ctx, t, partKind, "hs2.localhost", withMediaLimit(mediaLimit))
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

	// alice (on A) and bea (on B), each with a name and an avatar.
	alice := a.user(ctx, t, "alice", "Alice from A", id.ContentURI{})
	aliceAvatar := testPNG(t, 32, 32, 1)
	aliceAvatarURI := uploadT(ctx, t, alice, aliceAvatar, "image/png", "alice.png")
	if err := alice.SetAvatarURL(ctx, aliceAvatarURI); err != nil {
		t.Fatal(err)
	}
	bea := b.user(ctx, t, "bea", "Bea from B", id.ContentURI{})
	beaAvatar := testPNG(t, 32, 32, 2)
	beaAvatarURI := uploadT(ctx, t, bea, beaAvatar, "image/png", "bea.png")
	if err := bea.SetAvatarURL(ctx, beaAvatarURI); err != nil {
		t.Fatal(err)
	}
	aliceGhost, beaGhost := ghostOn(b, a, alice.UserID), ghostOn(a, b, bea.UserID)

	roomA := a.room(ctx, t, alice, "public_chat", 100)
	if answer := a.ask(ctx, t, alice, roomA, "!lm link"); !strings.HasPrefix(answer, "Linked") {
		t.Fatalf("alice's link answer = %q", answer)
	}
	linkA, err := a.br.DB().GetLinkByDAGRoom(ctx, roomA)
	if err != nil || linkA == nil {
		t.Fatalf("alice's link: %v, %v", linkA, err)
	}
	roomB := b.room(ctx, t, bea, "public_chat", 100)
	if answer := b.ask(ctx, t, bea, roomB, "!lm link "+linkA.LMRoomID+" via "+linkA.HubServer); !strings.HasPrefix(answer, "Linked") {
		t.Fatalf("bea's link answer = %q", answer)
	}

	// Each ghost's first join has its user's name and a copy of their avatar, on the ghost's homeserver.
	beaAvatarOnA := copyOn(t, a, b, beaAvatarURI)
	checkFirstJoin(ctx, t, alice, roomA, beaGhost, "Bea from B", beaAvatarOnA)
	sameFile(ctx, t, alice, "bea's avatar on A", beaAvatarOnA, beaAvatar, "image/png")
	aliceAvatarOnB := copyOn(t, b, a, aliceAvatarURI)
	checkFirstJoin(ctx, t, bea, roomB, aliceGhost, "Alice from A", aliceAvatarOnB)
	sameFile(ctx, t, bea, "alice's avatar on B", aliceAvatarOnB, aliceAvatar, "image/png")

	// An image with a thumbnail, each way: it opens on the other side, thumbnail, size and mimetype kept.
	sendImage := func(from *mautrix.Client, fromRoom id.RoomID, to *mautrix.Client, toRoom id.RoomID, ghost id.UserID, seed uint64, body string) (map[string]any, []byte, []byte, id.ContentURI) {
		t.Helper()
		img, thumb := testPNG(t, 64, 48, seed), testPNG(t, 16, 12, seed+100)
		imgURI := uploadT(ctx, t, from, img, "image/png", body)
		thumbURI := uploadT(ctx, t, from, thumb, "image/png", "thumbnail.png")
		sendText(ctx, t, from, fromRoom, imageContent(body, img, thumb, imgURI, thumbURI))
		got := rawContent(findDAG(ctx, t, to, toRoom, body+" on the other side", func(evt *event.Event) bool {
			return evt.Sender == ghost && bodyOf(evt) == body
		}))
		return got, img, thumb, imgURI
	}
	checkImage := func(to *mautrix.Client, what string, got map[string]any, img, thumb []byte) {
		t.Helper()
		info, _ := got["info"].(map[string]any)
		url, _ := got["url"].(string)
		thumbURL, _ := info["thumbnail_url"].(string)
		sameFile(ctx, t, to, what, url, img, "image/png")
		sameFile(ctx, t, to, what+"'s thumbnail", thumbURL, thumb, "image/png")
		if info["mimetype"] != "image/png" || info["size"] != float64(len(img)) {
			t.Errorf("%s's info is %v, want mimetype image/png and size %d", what, info, len(img))
		}
		thumbInfo, _ := info["thumbnail_info"].(map[string]any)
		if thumbInfo["size"] != float64(len(thumb)) {
			t.Errorf("%s's thumbnail_info is %v, want size %d", what, thumbInfo, len(thumb))
		}
	}
	got, img, thumb, imgURI := sendImage(alice, roomA, bea, roomB, aliceGhost, 10, "cat.png")
	checkImage(bea, "alice's image on B", got, img, thumb)
	got, img2, thumb2, _ := sendImage(bea, roomB, alice, roomA, beaGhost, 20, "dog.png")
	checkImage(alice, "bea's image on A", got, img2, thumb2)

	// The same file sent again is the same copy, fetched once: B holds one row for each of A's files it has seen
	// (alice's avatar, the image and its thumbnail).
	again := imageContent("cat again.png", img, thumb, imgURI, imgURI)
	sendText(ctx, t, alice, roomA, again)
	gotAgain := rawContent(findDAG(ctx, t, bea, roomB, "alice's image sent again on B", func(evt *event.Event) bool {
		return evt.Sender == aliceGhost && bodyOf(evt) == "cat again.png"
	}))
	firstOnB := rawContent(findDAG(ctx, t, bea, roomB, "alice's image on B", func(evt *event.Event) bool {
		return evt.Sender == aliceGhost && bodyOf(evt) == "cat.png"
	}))
	if gotAgain["url"] != firstOnB["url"] {
		t.Errorf("the image sent again is %v on B, the first time %v: want the same copy", gotAgain["url"], firstOnB["url"])
	}
	if n := mediaRows(t, b, a); n != 3 {
		t.Errorf("B holds %d copies of A's files, want 3 (alice's avatar, the image, its thumbnail)", n)
	}

	// A file over the limit whose event says its size: bea's own bridge tells her, and nothing crosses.
	big := make([]byte, mediaLimit+50<<10)
	for i := range big {
		big[i] = byte(i * 7)
	}
	bigURI := uploadT(ctx, t, bea, big, "application/octet-stream", "big.bin")
	sized := sendText(ctx, t, bea, roomB, map[string]any{"msgtype": "m.file", "body": "big.bin", "url": bigURI.String(),
		"info": map[string]any{"mimetype": "application/octet-stream", "size": len(big)}})
	notice := findDAG(ctx, t, bea, roomB, "the notice about bea's big file", func(evt *event.Event) bool {
		return evt.Sender == b.bot && replyTarget(rawContent(evt)) == string(sized)
	})
	if body := bodyOf(notice); !strings.Contains(body, "limit") {
		t.Errorf("the notice about bea's big file says %q, want it to name the limit", body)
	}
	// The same file without a size: it crosses to LM, and the hub's bridge, which cannot have it, tells her on LM.
	unsized := sendText(ctx, t, bea, roomB, map[string]any{"msgtype": "m.file", "body": "big-unsized.bin", "url": bigURI.String()})
	aBotGhost := ghostOn(b, a, a.bot)
	notice = findDAG(ctx, t, bea, roomB, "the hub's notice about bea's unsized big file", func(evt *event.Event) bool {
		return evt.Sender == aBotGhost && replyTarget(rawContent(evt)) == string(unsized)
	})
	if body := bodyOf(notice); !strings.Contains(body, "not bridged") {
		t.Errorf("the hub's notice about bea's unsized big file says %q", body)
	}
	sendText(ctx, t, bea, roomB, map[string]any{"msgtype": "m.text", "body": "after the big files"})
	findDAG(ctx, t, alice, roomA, "bea's text after the big files on A", func(evt *event.Event) bool {
		return evt.Sender == beaGhost && bodyOf(evt) == "after the big files"
	})
	for _, evt := range roomTimeline(ctx, t, alice, roomA) {
		if body := bodyOf(evt); body == "big.bin" || body == "big-unsized.bin" {
			t.Errorf("bea's file %s over the limit reached A: %v", body, rawContent(evt))
		}
	}

	// bea changes her name and avatar: her ghost on A follows, in its global profile and its member event in the room.
	newAvatar := testPNG(t, 40, 40, 3)
	newAvatarURI := uploadT(ctx, t, bea, newAvatar, "image/png", "bea2.png")
	if err = bea.SetDisplayName(ctx, "Bea renamed"); err != nil {
		t.Fatal(err)
	}
	if err = bea.SetAvatarURL(ctx, newAvatarURI); err != nil {
		t.Fatal(err)
	}
	newAvatarOnA := copyOn(t, a, b, newAvatarURI)
	waitUntil(t, 60*time.Second, "bea's ghost's member event on A to follow her profile", func() bool {
		evt, err := alice.FullStateEvent(ctx, roomA, event.StateMember, string(beaGhost))
		if err != nil {
			return false
		}
		c := rawContent(evt)
		return c["displayname"] == "Bea renamed" && c["avatar_url"] == newAvatarOnA
	})
	profile, err := alice.GetProfile(ctx, beaGhost)
	if err != nil {
		t.Fatal(err)
	}
	if profile.DisplayName != "Bea renamed" || profile.AvatarURL.String() != newAvatarOnA {
		t.Errorf("bea's ghost's profile on A is %q %s, want %q %s", profile.DisplayName, profile.AvatarURL, "Bea renamed", newAvatarOnA)
	}
	sameFile(ctx, t, alice, "bea's new avatar on A", newAvatarOnA, newAvatar, "image/png")

	checkFederationMediaAPI(ctx, t, a, b, img, imgURI)
	// A file over the serving bridge's limit is not served: 502 M_TOO_LARGE, as the spec has it.
	_, err = a.ours.NewMediaClient().DownloadMedia(ctx, string(b.ours.ServerName()), bigURI.FileID, 1<<30)
	var fedErr *federation.Error
	if !errors.As(err, &fedErr) || fedErr.Status != http.StatusBadGateway || fedErr.ErrCode != federation.ErrCodeTooLarge {
		t.Errorf("download of bea's big file from B's LM server: %v, want 502 M_TOO_LARGE", err)
	}
}

// checkFederationMediaAPI asks A's federation listener for media as B's LM server, and with bad requests.
func checkFederationMediaAPI(ctx context.Context, t *testing.T, a, b *bridgeNode, img []byte, imgURI id.ContentURI) {
	t.Helper()
	client := b.ours.NewMediaClient()
	dest := string(a.ours.ServerName())
	file, err := client.DownloadMedia(ctx, dest, imgURI.FileID, mediaLimit)
	if err != nil {
		t.Fatalf("download of alice's image from A's LM server: %v", err)
	}
	if !bytes.Equal(file.Data, img) || file.ContentType != "image/png" {
		t.Errorf("A's LM server gave %d bytes of %q for alice's image, want its %d bytes of image/png", len(file.Data), file.ContentType, len(img))
	}
	thumb, err := client.ThumbnailMedia(ctx, dest, imgURI.FileID, federation.Thumbnail{Width: 32, Height: 32, Method: "crop"}, mediaLimit)
	if err != nil {
		t.Errorf("thumbnail of alice's image from A's LM server: %v", err)
	} else if !strings.HasPrefix(thumb.ContentType, "image/") || len(thumb.Data) == 0 {
		t.Errorf("A's LM server gave a thumbnail of %d bytes of %q", len(thumb.Data), thumb.ContentType)
	}
	wantErr := func(what string, err error, status int, errcode string) {
		t.Helper()
		var fedErr *federation.Error
		if !errors.As(err, &fedErr) || fedErr.Status != status || fedErr.ErrCode != errcode || fedErr.Message == "" {
			t.Errorf("%s: got %v, want %d %s with a message", what, err, status, errcode)
		}
	}
	_, err = client.DownloadMedia(ctx, dest, "doesNotExist0123", mediaLimit)
	wantErr("unknown media", err, http.StatusNotFound, federation.ErrCodeNotFound)
	_, err = client.ThumbnailMedia(ctx, dest, imgURI.FileID, federation.Thumbnail{Width: 0, Height: 32}, mediaLimit)
	wantErr("thumbnail of width 0", err, http.StatusBadRequest, federation.ErrCodeInvalidParam)
	_, err = client.ThumbnailMedia(ctx, dest, imgURI.FileID, federation.Thumbnail{Width: 32, Height: 32, Method: "stretch"}, mediaLimit)
	wantErr("thumbnail method stretch", err, http.StatusBadRequest, federation.ErrCodeInvalidParam)

	// Without X-Matrix, or with a signature by a key that is not the origin's.
	url := "http://" + dest + "/_matrix/federation/v1/media/download/" + imgURI.FileID
	for _, auth := range []string{"", `X-Matrix origin="` + string(b.ours.ServerName()) + `",destination="` + dest +
		`",key="ed25519:bogus",sig="AAAA"`} {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(body), `"errcode":"M_FORBIDDEN"`) {
			t.Errorf("media download with Authorization %q: HTTP %d %s, want 401 M_FORBIDDEN", auth, resp.StatusCode, body)
		}
	}
}
