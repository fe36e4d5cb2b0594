package appservice

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/internal/sqlitecap"
)

// syncBuffer is a log sink the listener's goroutines write to while the test reads it.
type syncBuffer struct {
	lock sync.Mutex
	buf  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.lock.Lock()
	defer b.lock.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.lock.Lock()
	defer b.lock.Unlock()
	return b.buf.String()
}

// The database fills while the homeserver sends transactions: a transaction that cannot be stored is answered
// 503 with an error that says the database is full (so the homeserver keeps it and retries), nothing of it is
// stored, the log says the disk is full; once space is back the retried transactions are stored, and every event
// reaches the handler once, in its room's order.
func TestDiskFullRefusesTransactionsUntilSpaceIsBack(t *testing.T) {
	ctx := context.Background()
	capped, err := sqlitecap.Open(ctx, filepath.Join(t.TempDir(), "as.db"), 4)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = capped.Close() })
	as, err := New(Params{
		Homeserver: config.Homeserver{Address: "http://127.0.0.1:1", Domain: "hs.test"},
		AppService: config.AppService{
			Hostname: "127.0.0.1", Port: 0, ID: "lmbridge",
			Bot:              config.Bot{Username: "lmbridge"},
			UsernameTemplate: "lm_{{.}}", MaxBodyBytes: 1 << 20,
		},
		Registration: testRegistration(),
		DB:           capped.Database,
	})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	log := zerolog.New(zerolog.MultiLevelWriter(logs, zerolog.NewTestWriter(t))).Level(zerolog.WarnLevel)
	runCtx, cancel := context.WithCancel(log.WithContext(ctx))
	if err = as.Upgrade(runCtx); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	if err = as.Start(runCtx, rec); err != nil {
		t.Fatal(err)
	}
	tas := &testAS{AppService: as, url: "http://" + as.Addr().String(), cancel: cancel, db: capped.Database}
	t.Cleanup(tas.stop)

	rooms := []id.RoomID{"!a:hs.test", "!b:hs.test"}
	const (
		transactions = 60
		perTxn       = 6
		// fillEvery transactions the database is capped a few pages above its size; it stays full until
		// refusalsBeforeFree refusals of one transaction have been seen.
		fillEvery          = 10
		refusalsBeforeFree = 3
	)
	var refused, rounds int
	stored := map[string]int{}
	for i := 0; i < transactions; i++ {
		if i%fillEvery == fillEvery/2 {
			if err = capped.Fill(ctx, 2); err != nil {
				t.Fatal(err)
			}
			rounds++
		}
		var events []map[string]any
		for j := 0; j < perTxn; j++ {
			room := rooms[j%len(rooms)]
			events = append(events, msgEvent(room, id.EventID(fmt.Sprintf("$t%03d-%d", i, j)), strings.Repeat("x", 1500)))
		}
		body := txnBody(events...)
		txnID := fmt.Sprintf("txn%03d", i)
		// The homeserver's way: a transaction is sent again, unchanged, until it gets 200; the next waits.
		for attempt := 0; ; attempt++ {
			before := map[string]int{"appservice_transaction": tas.count(t, "appservice_transaction"), "appservice_event": tas.count(t, "appservice_event")}
			resp := tas.put(t, txnID, body, testHSToken, "")
			if resp.status == http.StatusOK {
				break
			}
			refused++
			if resp.status != http.StatusServiceUnavailable || resp.errcode != "M_UNKNOWN" || !strings.Contains(resp.message, "full") {
				t.Fatalf("%s refused with %d %s %q, want 503 M_UNKNOWN saying the database is full", txnID, resp.status, resp.errcode, resp.message)
			}
			for table, n := range before {
				if got := tas.count(t, table); got != n {
					t.Fatalf("%s refused but %s went from %d to %d rows", txnID, table, n, got)
				}
			}
			if attempt+1 >= refusalsBeforeFree {
				capped.Free()
			}
			if attempt > 20 {
				t.Fatalf("%s still refused after space was given back", txnID)
			}
		}
		stored[txnID]++
	}
	t.Logf("%d transactions of %d events, database filled %d times, %d refusals", transactions, perTxn, rounds, refused)
	if refused < rounds {
		t.Fatalf("%d refusals in %d fills: the cap did not fill the database", refused, rounds)
	}
	if !strings.Contains(logs.String(), "database is full") {
		t.Errorf("the log does not say the database is full:\n%s", logs.String())
	}

	// Every event handled once, in order.
	want := transactions * perTxn / len(rooms)
	waitFor(t, "every event handled", func() bool {
		return len(rec.roomEvents(rooms[0])) >= want && len(rec.roomEvents(rooms[1])) >= want
	})
	lost, duplicated, reordered := 0, 0, 0
	for r, room := range rooms {
		got := rec.roomEvents(room)
		seen := map[id.EventID]bool{}
		var last id.EventID
		for _, evt := range got {
			if seen[evt] {
				duplicated++
			}
			seen[evt] = true
			if evt < last {
				reordered++
			}
			last = evt
		}
		for i := 0; i < transactions; i++ {
			for j := r; j < perTxn; j += len(rooms) {
				evt := id.EventID(fmt.Sprintf("$t%03d-%d", i, j))
				if !seen[evt] {
					lost++
				}
				if n := rec.callCount(evt); n != 1 {
					t.Errorf("%s handled %d times", evt, n)
				}
			}
		}
	}
	t.Logf("%d events: %d lost, %d duplicated, %d reordered", transactions*perTxn, lost, duplicated, reordered)
	if lost+duplicated+reordered != 0 {
		t.Fatalf("%d lost, %d duplicated, %d reordered", lost, duplicated, reordered)
	}
}
