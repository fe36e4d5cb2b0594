package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
)

// TestConcurrentIntake sends transactions for one room to lmbridge's transaction endpoint many at a time, as no
// homeserver does but nothing forbids: every acknowledged event must reach the handler exactly once. On SQLite the one
// writer orders the commits; on PostgreSQL commits of concurrent transactions can land out of the order of their
// sequence numbers, which the room worker must not skip over.
func TestConcurrentIntake(t *testing.T) {
	for _, dbk := range []dbKind{sqliteDB, postgresDB} {
		t.Run(string(dbk), func(t *testing.T) {
			if dbk == postgresDB {
				testpg.RequireT(t)
			}
			testConcurrentIntake(t, dbk)
		})
	}
}

func testConcurrentIntake(t *testing.T, dbk dbKind) {
	const (
		transactions = 400
		parallel     = 16
	)
	ctx := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(testContext(t))
	port, err := tesths.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	cfg := &config.Config{
		Homeserver: config.Homeserver{Address: "http://127.0.0.1:1", Domain: tesths.DefaultServerName},
		AppService: config.AppService{Address: "http://127.0.0.1:" + strconv.Itoa(port), Hostname: "127.0.0.1",
			Port: uint16(port), ID: "lmbridge", Bot: config.Bot{Username: "lmbridge"}, UsernameTemplate: "lm_{{.}}",
			AliasTemplate: "lm_{{.}}"},
	}
	reg, err := appservice.GenerateRegistration(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	db := openBridgeDB(t, "intake", dbk)
	as, err := appservice.New(appservice.Params{Homeserver: cfg.Homeserver, AppService: cfg.AppService, Registration: reg, DB: db})
	if err != nil {
		t.Fatal(err)
	}
	if err = as.Upgrade(ctx); err != nil {
		t.Fatal(err)
	}
	var lock sync.Mutex
	var handled []string
	err = as.Start(ctx, appservice.EventHandlerFunc(func(_ context.Context, evt *event.Event) error {
		lock.Lock()
		defer lock.Unlock()
		handled = append(handled, evt.ID.String())
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(as.Stop)

	roomID := id.RoomID("!concurrent:" + tesths.DefaultServerName)
	base := "http://127.0.0.1:" + strconv.Itoa(port) + "/_matrix/app/v1/transactions/"
	put := func(i int) error {
		body, _ := json.Marshal(map[string]any{"events": []map[string]any{{
			"event_id": fmt.Sprintf("$intake-%04d", i), "room_id": roomID, "type": "m.room.message",
			"sender": "@alice:" + tesths.DefaultServerName, "origin_server_ts": time.Now().UnixMilli(),
			"content": map[string]any{"msgtype": "m.text", "body": strconv.Itoa(i)},
		}}})
		req, err := http.NewRequestWithContext(ctx, http.MethodPut, base+"txn-"+strconv.Itoa(i), bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Authorization", "Bearer "+reg.ServerToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("transaction %d answered %s", i, resp.Status)
		}
		return nil
	}
	jobs := make(chan int)
	errs := make(chan error, transactions)
	var wg sync.WaitGroup
	for range parallel {
		wg.Go(func() {
			for i := range jobs {
				errs <- put(i)
			}
		})
	}
	for i := range transactions {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	// Every transaction was acknowledged: each of its events must be handled, once.
	count := func() int {
		lock.Lock()
		defer lock.Unlock()
		return len(handled)
	}
	deadline := time.Now().Add(30 * time.Second)
	for count() < transactions && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(300 * time.Millisecond)
	lock.Lock()
	got := slices.Clone(handled)
	lock.Unlock()
	seen := map[string]int{}
	for _, e := range got {
		seen[e]++
	}
	var missing, repeated []string
	for i := range transactions {
		e := fmt.Sprintf("$intake-%04d", i)
		switch seen[e] {
		case 0:
			missing = append(missing, e)
		case 1:
		default:
			repeated = append(repeated, e)
		}
	}
	if len(missing) > 0 || len(repeated) > 0 {
		// Whether the inbox still has the missing events pending (a restart would deliver them) or marked them
		// handled (they are lost for good).
		markedHandled := 0
		for _, e := range missing {
			var handledAt *int64
			if err = db.RawDB.QueryRow(`SELECT handled_at FROM appservice_event WHERE event_id=$1`, e).Scan(&handledAt); err != nil {
				t.Fatalf("failed to read inbox row of %s: %v", e, err)
			}
			if handledAt != nil {
				markedHandled++
			}
		}
		t.Errorf("of %d acknowledged events, %d never reached the handler (%d of them marked handled in the inbox: %v) and %d reached it more than once (%v)",
			transactions, len(missing), markedHandled, missing, len(repeated), repeated)
	}
	left := inboxProblems(t, db.RawDB)
	if len(left) != 0 {
		t.Errorf("%d inbox events unhandled or failed, e.g. %s", len(left), left[0])
	}
}
