package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/federation"
	"github.com/lmbridge/lmbridge/linearize/pdu"
)

// txnResult is one /send a hub made and how the destination answered it.
type txnResult struct {
	dest string
	ids  []string
	resp *federation.SendResponse
	err  error
}

// txnRecorder is a Remote that keeps every /send answer it passes on.
type txnRecorder struct {
	Remote
	lock    sync.Mutex
	results []txnResult
	changed chan struct{}
}

func newTxnRecorder() *txnRecorder {
	return &txnRecorder{changed: make(chan struct{}, 1)}
}

func (r *txnRecorder) SendTransaction(ctx context.Context, dest, txnID string, txn *federation.Transaction) (*federation.SendResponse, error) {
	resp, err := r.Remote.SendTransaction(ctx, dest, txnID, txn)
	res := txnResult{dest: dest, resp: resp, err: err}
	for _, raw := range txn.PDUs {
		if p, perr := pdu.Parse(raw); perr == nil {
			res.ids = append(res.ids, must(p.EventID()))
		}
	}
	r.lock.Lock()
	r.results = append(r.results, res)
	r.lock.Unlock()
	select {
	case r.changed <- struct{}{}:
	default:
	}
	return resp, err
}

func (r *txnRecorder) snapshot() []txnResult {
	r.lock.Lock()
	defer r.lock.Unlock()
	return append([]txnResult(nil), r.results...)
}

// waitSent waits until dest has answered a /send holding eventID, or has refused one; it returns what dest answered
// so far.
func (r *txnRecorder) waitSent(dest, eventID string) []txnResult {
	deadline := time.After(60 * time.Second)
	for {
		got := r.snapshot()
		for _, res := range got {
			if res.dest == dest && (res.err != nil || strings.Contains(strings.Join(res.ids, " "), eventID)) {
				return got
			}
		}
		select {
		case <-r.changed:
		case <-deadline:
			return got
		}
	}
}

// eigenOrderHub starts a hub that, like eigen, answers send_join only once the joining server has answered the /send
// that carries the new join and a message sent right after it. It returns the hub, its /send recorder and a channel
// that receives, at each join, the /send answers the joining server gave before send_join was answered.
func eigenOrderHub(t *testing.T) (*node, *txnRecorder, chan []txnResult) {
	t.Helper()
	rec := newTxnRecorder()
	before := make(chan []txnResult, 4)
	var waited sync.Map
	hub := newHTTPNodeWith(t, func(r Remote) Remote { rec.Remote = r; return rec }, func(e *Engine) {
		e.beforeJoinAnswer = func(ctx context.Context, join *StoredEvent) {
			if _, again := waited.LoadOrStore(join.EventID, true); again {
				// A repeated send_join (a resumed join): the first answer already waited.
				return
			}
			p := must(pdu.Parse(join.PDU))
			alice := "@alice:" + e.serverName
			msg, err := e.SendEvent(ctx, join.RoomID, alice, "m.room.message", nil, text("sent before send_join answered"), time.Time{})
			if err != nil {
				panic(err)
			}
			before <- rec.waitSent(p.SenderServer(), msg)
		}
	})
	return hub, rec, before
}

func slicesContainID(results []txnResult, id string) bool {
	for _, res := range results {
		for _, got := range res.ids {
			if got == id {
				return true
			}
		}
	}
	return false
}

// checkAnswered fails the test unless dest answered every /send it got with no error and no failed PDU, and got at
// least one holding each of ids.
func checkAnswered(t *testing.T, results []txnResult, dest string, ids ...string) {
	t.Helper()
	var mine []txnResult
	for _, res := range results {
		if res.dest == dest {
			mine = append(mine, res)
		}
	}
	for _, res := range mine {
		if res.err != nil {
			t.Fatalf("%s answered the /send of %v before send_join was answered with %v", dest, res.ids, res.err)
		} else if len(res.resp.FailedPDUs) != 0 {
			t.Fatalf("%s refused PDUs sent before send_join was answered: %v", dest, res.resp.FailedPDUs)
		}
	}
	for _, id := range ids {
		if !slicesContainID(mine, id) {
			t.Fatalf("%s was not sent %s before send_join was answered (sent %+v)", dest, id, mine)
		}
	}
}

// TestSendBeforeSendJoinAnswer: the hub sends the new join, and a message after it, to the joining server before it
// answers send_join, as eigen does. The joining server must answer that /send (200, nothing failed) while its own
// join waits, and its log must then hold the join and the message, in the hub's order.
func TestSendBeforeSendJoinAnswer(t *testing.T) {
	hub, _, before := eigenOrderHub(t)
	part := newHTTPNode(t, nil)
	ctx := testContext(t)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	joinID := must(part.eng.Join(ctx, roomID, bob, hub.name))
	answered := <-before
	hubLog := logIDs(t, hub, roomID)
	msg := hubLog[len(hubLog)-1]
	checkAnswered(t, answered, part.name, joinID, msg)
	waitHead(t, part, roomID, msg)
	later := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after the join"), time.Time{}))
	waitHead(t, part, roomID, later)
	checkMirror(t, hub, part, roomID, nil)
	if got := logIDs(t, part, roomID); got[0] != joinID {
		t.Fatalf("the participant's log starts with %s, not its join %s", got[0], joinID)
	}
}

var errCrashed = errors.New("participant crashed before send_join answered")

// TestJoinSurvivesCrashBeforeAnswer: as above, but the joining server stops after answering the hub's /send and
// before it reads the send_join answer. After a restart the join is resent and completes, and the PDUs it answered
// before the crash are in its log, in order, once.
func TestJoinSurvivesCrashBeforeAnswer(t *testing.T) {
	hub, _, before := eigenOrderHub(t)
	var crash atomic.Bool
	crash.Store(true)
	gotAnswer, release := make(chan struct{}), make(chan struct{})
	part := newHTTPNodeWith(t, func(r Remote) Remote {
		return &crashingJoin{Remote: r, crash: &crash, gotAnswer: gotAnswer, release: release}
	}, nil)
	ctx := testContext(t)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	must(hub.eng.InviteUser(ctx, roomID, alice, bob))
	joined := make(chan error, 1)
	go func() {
		_, err := part.eng.Join(ctx, roomID, bob, hub.name)
		joined <- err
	}()
	answered := <-before
	<-gotAnswer
	hubLog := logIDs(t, hub, roomID)
	joinID, msg := hubLog[len(hubLog)-2], hubLog[len(hubLog)-1]
	checkAnswered(t, answered, part.name, joinID, msg)
	// The crash: the engine and its database go away while Join waits for the answer.
	httpNet{}.stop(t, part)
	close(release)
	if err := <-joined; !errors.Is(err, errCrashed) {
		t.Fatalf("join during the crash: %v", err)
	}
	crash.Store(false)
	httpNet{}.start(t, part)
	waitHead(t, part, roomID, msg)
	later := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("after the restart"), time.Time{}))
	waitHead(t, part, roomID, later)
	checkMirror(t, hub, part, roomID, nil)
	if got := logIDs(t, part, roomID); got[0] != joinID {
		t.Fatalf("the participant's log starts with %s, not its join %s", got[0], joinID)
	}
	var left int
	if err := part.db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM lm_join_pending) + (SELECT COUNT(*) FROM lm_join)`).Scan(&left); err != nil || left != 0 {
		t.Fatalf("%d join rows left after the join completed (%v)", left, err)
	}
}

// crashingJoin passes send_join on, and while crash is set keeps its answer from the engine: it signals gotAnswer,
// waits for release and fails, as if the process had died.
type crashingJoin struct {
	Remote
	crash              *atomic.Bool
	gotAnswer, release chan struct{}
}

func (c *crashingJoin) SendJoin(ctx context.Context, dest, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	resp, err := c.Remote.SendJoin(ctx, dest, txnID, event)
	if err != nil || !c.crash.Load() {
		return resp, err
	}
	close(c.gotAnswer)
	<-c.release
	return nil, errCrashed
}

// delayedInviteHub starts a hub that waits for release after the invitee's server countersigned an invite and
// before it appends it, then appends it if drop is unset and fails the invite if it is set.
func delayedInviteHub(t *testing.T, release <-chan struct{}, drop bool) *node {
	t.Helper()
	return newHTTPNodeWith(t, nil, func(e *Engine) {
		e.inviteCountersigned = func(ctx context.Context, _ string) error {
			select {
			case <-release:
			case <-ctx.Done():
				return ctx.Err()
			}
			if drop {
				return errors.New("invite dropped by the test")
			}
			return nil
		}
	})
}

// retryCounter counts a participant's join retries and tells of the first.
type retryCounter struct {
	n     atomic.Int32
	first chan error
}

func newRetryCounter() *retryCounter {
	return &retryCounter{first: make(chan error, 1)}
}

func (c *retryCounter) install(joinRetryFor time.Duration) func(e *Engine) {
	return func(e *Engine) {
		if joinRetryFor > 0 {
			e.joinRetryFor = joinRetryFor
		}
		e.joinRetried = func(err error) {
			if c.n.Add(1) == 1 {
				c.first <- err
			}
		}
	}
}

func isForbidden(err error, message string) bool {
	var fe *federation.Error
	return errors.As(err, &fe) && fe.Status == http.StatusForbidden && fe.ErrCode == federation.ErrCodeForbidden &&
		strings.Contains(fe.Message, message)
}

// TestJoinRetriesUntilInviteAppended reproduces the demo's first run: the participant joins as soon as it has
// countersigned the invite, before the hub has appended it. The hub refuses make_join; the participant must retry
// and join once the invite is in the hub's log.
func TestJoinRetriesUntilInviteAppended(t *testing.T) {
	release := make(chan struct{})
	hub := delayedInviteHub(t, release, false)
	retries := newRetryCounter()
	part := newHTTPNodeWith(t, nil, retries.install(0))
	ctx := testContext(t)
	alice, bob := userAt("alice", hub.name), userAt("bob", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	invited := make(chan error, 1)
	go func() {
		_, err := hub.eng.InviteUser(ctx, roomID, alice, bob)
		invited <- err
	}()
	part.rec.waitFor(t, "bob's countersigned invite", func() bool { return lastInvite(part, roomID, bob) != nil })
	joined := make(chan error, 1)
	var joinID string
	go func() {
		var err error
		joinID, err = part.eng.Join(ctx, roomID, bob, hub.name)
		joined <- err
	}()
	select {
	case err := <-retries.first:
		if !isForbidden(err, "not invited") {
			t.Fatalf("first refusal %v, want 403 M_FORBIDDEN for a user not invited yet", err)
		}
	case err := <-joined:
		t.Fatalf("join before the hub appended the invite ended without a retry: %v", err)
	}
	close(release)
	if err := <-invited; err != nil {
		t.Fatal(err)
	}
	if err := <-joined; err != nil {
		t.Fatalf("join after the invite was appended: %v", err)
	}
	waitHead(t, part, roomID, joinID)
	checkMirror(t, hub, part, roomID, nil)
}

// TestJoinRetryIsBounded: a countersigned invite that the hub never appends is retried for joinRetryFor, then the
// hub's refusal is returned as it came; a user with no invite at all is refused at once.
func TestJoinRetryIsBounded(t *testing.T) {
	release := make(chan struct{})
	close(release)
	hub := delayedInviteHub(t, release, true)
	retries := newRetryCounter()
	part := newHTTPNodeWith(t, nil, retries.install(700*time.Millisecond))
	ctx := testContext(t)
	alice, bob, carol := userAt("alice", hub.name), userAt("bob", part.name), userAt("carol", part.name)
	roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
	if _, err := hub.eng.InviteUser(ctx, roomID, alice, bob); err == nil {
		t.Fatalf("the hub appended an invite the test drops")
	}
	if lastInvite(part, roomID, bob) == nil {
		part.rec.waitFor(t, "bob's countersigned invite", func() bool { return lastInvite(part, roomID, bob) != nil })
	}
	_, err := part.eng.Join(ctx, roomID, bob, hub.name)
	if !isForbidden(err, "not invited") {
		t.Fatalf("join with an invite the hub never appended: %v, want 403 M_FORBIDDEN saying bob is not invited", err)
	}
	if n := retries.n.Load(); n < 2 {
		t.Fatalf("the join was retried %d times, want the bounded retries (at least 2)", n)
	}
	retries.n.Store(0)
	_, err = part.eng.Join(ctx, roomID, carol, hub.name)
	if !isForbidden(err, "not invited") || retries.n.Load() != 0 {
		t.Fatalf("uninvited join: %v after %d retries, want 403 M_FORBIDDEN at once", err, retries.n.Load())
	}
	if room := must(part.eng.Room(ctx, roomID)); room != nil {
		t.Fatalf("a refused join left the room behind: %+v", room)
	}
}

// TestSecondUserJoinsFollowedRoom: a second user of a server already in the room joins, with the hub answering
// send_join before its fan-out (ours) and after it (eigen's order). The room is not held back meanwhile, and the
// participant's log stays the hub's, in order, with both joins once.
func TestSecondUserJoinsFollowedRoom(t *testing.T) {
	for _, order := range []string{"answer first", "fan-out first"} {
		t.Run(order, func(t *testing.T) {
			var hub *node
			if order == "answer first" {
				hub = newHTTPNode(t, nil)
			} else {
				hub, _, _ = eigenOrderHub(t)
			}
			part := newHTTPNode(t, nil)
			ctx := testContext(t)
			alice, bob, carol := userAt("alice", hub.name), userAt("bob", part.name), userAt("carol", part.name)
			roomID := must(hub.eng.CreateRoom(ctx, alice, nil))
			must(hub.eng.InviteUser(ctx, roomID, alice, bob))
			bobJoin := must(part.eng.Join(ctx, roomID, bob, hub.name))
			must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("hi bob"), time.Time{}))
			must(hub.eng.InviteUser(ctx, roomID, alice, carol))
			carolJoin := must(part.eng.Join(ctx, roomID, carol, hub.name))
			waitHead(t, part, roomID, logIDs(t, hub, roomID)[len(logIDs(t, hub, roomID))-1])
			later := must(hub.eng.SendEvent(ctx, roomID, alice, "m.room.message", nil, text("hi both"), time.Time{}))
			waitHead(t, part, roomID, later)
			checkMirror(t, hub, part, roomID, nil)
			got := logIDs(t, part, roomID)
			if got[0] != bobJoin || !slices.Contains(got, carolJoin) {
				t.Fatalf("participant log %v, want it to start with bob's join %s and hold carol's %s", got, bobJoin, carolJoin)
			}
			membership := ""
			for _, st := range must(part.eng.CurrentState(ctx, roomID)) {
				if st.Type == "m.room.member" && st.StateKey == carol {
					membership = st.Membership
				}
			}
			if membership != "join" {
				t.Fatalf("carol's membership is %q in the participant's state, want join", membership)
			}
		})
	}
}

// orderedReplayRemote is replayRemote with eigen A's order: before it answers send_join, it delivers A's /send of
// the completed join (recorded just after the send_join in the trace, sent before the answer by eigen's code).
type orderedReplayRemote struct {
	replayRemote
	beforeAnswer func()
}

func (r *orderedReplayRemote) SendJoin(ctx context.Context, dest, txnID string, event json.RawMessage) (*federation.SendJoinResponse, error) {
	r.beforeAnswer()
	return r.replayRemote.SendJoin(ctx, dest, txnID, event)
}

// TestEigenParticipantJoinEchoFirst joins eigen A's recorded room as eigen B, with A's /send of the join arriving
// while send_join is still unanswered: it must be answered 200 with nothing failed, and the mirror must hold A's
// timeline from the join on, the join once.
func TestEigenParticipantJoinEchoFirst(t *testing.T) {
	trace := loadCapture(t, "10-eigen-to-eigen-federation-trace.json")
	invite, makeJoin, sendJoin := trace[0], trace[2], trace[3]
	var joinLPDU pdu.PDU
	if err := json.Unmarshal(sendJoin.RequestBody, &joinLPDU); err != nil {
		t.Fatal(err)
	}
	remote := &orderedReplayRemote{replayRemote: replayRemote{Remote: unreachable{}}}
	_ = json.Unmarshal(makeJoin.ResponseBody, &remote.makeJoin)
	_ = json.Unmarshal(sendJoin.ResponseBody, &remote.sendJoin)
	part := startAs(t, eigenB, eigenKeys(t), remote, func() time.Time { return time.UnixMilli(joinLPDU.OriginServerTS) })
	ctx := testContext(t)
	if ans := replay(t, part, invite); ans.status != http.StatusOK {
		t.Fatalf("invite: %d %s", ans.status, ans.body)
	}
	var echo rawAnswer
	remote.beforeAnswer = func() { echo = replay(t, part, trace[5]) }
	var req federation.InviteRequest
	_ = json.Unmarshal(invite.RequestBody, &req)
	ev := must(pdu.Parse(req.Event))
	joinID := must(part.eng.Join(ctx, ev.RoomID, *ev.StateKey, eigenA))
	if echo.status != http.StatusOK || !strings.Contains(string(echo.body), `"failed_pdus":{}`) {
		t.Fatalf("/send of the join before send_join answered: %d %s", echo.status, echo.body)
	}
	for _, i := range []int{6, 8} {
		if ans := replay(t, part, trace[i]); ans.status != http.StatusOK || !strings.Contains(string(ans.body), `"failed_pdus":{}`) {
			t.Fatalf("replayed /send %d: %d %s", i, ans.status, ans.body)
		}
	}
	var dump struct {
		Response struct {
			Body []struct {
				EventID string `json:"event_id"`
			} `json:"body"`
		} `json:"response"`
	}
	_ = json.Unmarshal(must(os.ReadFile(filepath.Join(eigenDir, "20-hub-dump-room.json"))), &dump)
	var want []string
	for _, e := range dump.Response.Body {
		want = append(want, e.EventID)
	}
	got := logIDs(t, part, ev.RoomID)
	if i := slices.Index(want, joinID); i < 0 || !slices.Equal(got, want[i:]) {
		t.Fatalf("our mirror:\n%v\neigen A's timeline:\n%v", got, want)
	}
}
