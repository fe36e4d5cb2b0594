package linearize

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/internal/sqlitecap"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// sendWatch is a participant's federation client that records what the hub answered its transactions.
type sendWatch struct {
	Remote
	lock sync.Mutex
	// refused are the statuses of transactions the hub did not take; failed are PDUs it answered as failed.
	refused []int
	failed  []string
}

func (w *sendWatch) SendTransaction(ctx context.Context, dest, txnID string, txn *federation.Transaction) (*federation.SendResponse, error) {
	resp, err := w.Remote.SendTransaction(ctx, dest, txnID, txn)
	w.lock.Lock()
	defer w.lock.Unlock()
	var fedErr *federation.Error
	if errors.As(err, &fedErr) {
		w.refused = append(w.refused, fedErr.Status)
	} else if err == nil {
		for id, f := range resp.FailedPDUs {
			w.failed = append(w.failed, id+": "+f.Error)
		}
	}
	return resp, err
}

func (w *sendWatch) seen() ([]int, []string) {
	w.lock.Lock()
	defer w.lock.Unlock()
	return append([]int(nil), w.refused...), append([]string(nil), w.failed...)
}

// The hub's database fills while both sides send: the hub's own sends fail with an error that says the database
// is full (nothing acknowledged), the participant's transactions are answered 503 (not 200 with failed PDUs), the
// hub logs that the database is full, and nothing is half-written; once space is back every message arrives on both
// sides once, in each sender's order.
func TestDiskFullOnTheHubLosesNothing(t *testing.T) {
	ctx := context.Background()
	var capped *sqlitecap.DB
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hub := &node{name: ln.Addr().String(), dbPath: filepath.Join(t.TempDir(), "lm.db"), key: mautrixfed.GenerateSigningKey(), ln: ln}
	hub.openDB = func(t testing.TB, path string) *dbutil.Database {
		if capped, err = sqlitecap.Open(ctx, path, 4); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = capped.Close() })
		return capped.Database
	}
	httpNet{}.start(t, hub)
	watch := &sendWatch{}
	part := newHTTPNodeWith(t, func(r Remote) Remote { watch.Remote = r; return watch }, nil)
	roomID, alice, bob := joinedPair(t, hub, part)
	hubCtx := testContext(t)

	const (
		perSender = 60
		// Every fillEvery messages the hub's database is capped two pages above its size, for fullFor.
		fillEvery = 15
		fullFor   = 1500 * time.Millisecond
	)
	var hubRefused, fills int
	var freeAt time.Time
	for i := 0; i < perSender; i++ {
		if i%fillEvery == fillEvery/2 {
			if err = capped.Fill(ctx, 2); err != nil {
				t.Fatal(err)
			}
			fills++
			freeAt = time.Now().Add(fullFor)
		}
		if !freeAt.IsZero() && time.Now().After(freeAt) {
			capped.Free()
			freeAt = time.Time{}
		}
		// bob's send is stored by his own server and delivered by its outbox, which retries.
		must(part.eng.SendEvent(ctx, roomID, bob, "m.room.message", nil, text(fmt.Sprintf("bob %03d", i)), time.Time{}))
		// alice's is the hub's own: refused while the database is full, and sent again, as a client would.
		for {
			_, err = hub.eng.SendEvent(hubCtx, roomID, alice, "m.room.message", nil, text(fmt.Sprintf("alice %03d", i)), time.Time{})
			if err == nil {
				break
			}
			hubRefused++
			if !database.IsFull(err) {
				t.Fatalf("alice's send failed for another reason than a full database: %v", err)
			}
			if !freeAt.IsZero() && time.Now().After(freeAt) {
				capped.Free()
				freeAt = time.Time{}
			}
			time.Sleep(50 * time.Millisecond)
		}
		time.Sleep(20 * time.Millisecond)
	}
	capped.Free()

	want := map[string]int{"alice": perSender, "bob": perSender}
	bodies := func(nd *node) map[string][]int {
		out := map[string][]int{}
		for _, evt := range must(nd.eng.Events(ctx, roomID, 0, 100000)) {
			var p struct {
				Type    string `json:"type"`
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			}
			if err := json.Unmarshal(evt.PDU, &p); err != nil || p.Type != "m.room.message" {
				continue
			}
			c := p.Content
			var who string
			var n int
			if _, err := fmt.Sscanf(c.Body, "%s %d", &who, &n); err == nil {
				out[who] = append(out[who], n)
			}
		}
		return out
	}
	complete := func(nd *node) bool {
		got := bodies(nd)
		for who, n := range want {
			if len(got[who]) < n {
				return false
			}
		}
		return true
	}
	deadline := time.Now().Add(60 * time.Second)
	for !complete(hub) || !complete(part) {
		if time.Now().After(deadline) {
			t.Fatalf("not everything arrived within 60 s of space coming back: hub %v, participant %v", bodies(hub), bodies(part))
		}
		time.Sleep(100 * time.Millisecond)
	}
	refused, failed := watch.seen()
	t.Logf("%d messages each way, hub's database filled %d times: %d of alice's sends refused, %d of bob's transactions refused (%v)",
		perSender, fills, hubRefused, len(refused), refused)
	if hubRefused == 0 || len(refused) == 0 {
		t.Errorf("the cap did not fill the database: %d hub sends and %d transactions refused", hubRefused, len(refused))
	}
	for _, status := range refused {
		if status != http.StatusServiceUnavailable {
			t.Errorf("a transaction to the full hub was answered %d, want 503", status)
		}
	}
	if len(failed) > 0 {
		t.Errorf("the hub answered PDUs as failed (the participant drops them): %v", failed)
	}
	for _, side := range []struct {
		name string
		nd   *node
	}{{"hub", hub}, {"participant", part}} {
		got := bodies(side.nd)
		for who, n := range want {
			lost, duplicated, reordered := 0, 0, 0
			seen := map[int]int{}
			for k, m := range got[who] {
				seen[m]++
				if seen[m] > 1 {
					duplicated++
				}
				if k > 0 && m < got[who][k-1] {
					reordered++
				}
			}
			for m := 0; m < n; m++ {
				if seen[m] == 0 {
					lost++
				}
			}
			t.Logf("%s, %s's messages: %d lost, %d duplicated, %d reordered", side.name, who, lost, duplicated, reordered)
			if lost+duplicated+reordered > 0 {
				t.Errorf("%s, %s's messages: %d lost, %d duplicated, %d reordered: %v", side.name, who, lost, duplicated, reordered, got[who])
			}
		}
	}
}
