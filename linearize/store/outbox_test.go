package store_test

import (
	"context"
	"path/filepath"
	"slices"
	"strconv"
	"testing"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/linearize/outbox"
	"github.com/lmbridge/lmbridge/linearize/store"
)

// openStore opens the store over a new SQLite database.
func openStore(t *testing.T) *store.Store {
	t.Helper()
	db, err := database.Open(context.Background(), config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), "lm.db") + "?_txlock=immediate", MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	st, err := store.Open(context.Background(), db.Database)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestOutboxBatchCapsLPDUs reads a destination's outbox holding LPDUs and PDUs mixed: a batch ends before the LPDU
// that would exceed outbox.MaxLPDUsPerTxn, PDUs do not count, and the same rows give the same batch.
func TestOutboxBatchCapsLPDUs(t *testing.T) {
	ctx := context.Background()
	st := openStore(t)
	const dest = "other.example"
	// Every third row is a PDU (its body read from the log, absent here); the rest are LPDUs.
	var want []int64
	lpdus := 0
	for seq := int64(1); seq <= 45; seq++ {
		var lpdu any
		if seq%3 != 0 {
			lpdu = `{"n":` + strconv.FormatInt(seq, 10) + `}`
			lpdus++
		}
		if lpdus <= outbox.MaxLPDUsPerTxn {
			want = append(want, seq)
		}
		row := store.OutboxRow{Destination: dest, Seq: seq, RoomID: "!r:other.example", EventID: "$e" + strconv.FormatInt(seq, 10), LPDU: lpdu}
		if err := st.InsertOutbox(ctx, []store.OutboxRow{row}); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		items, err := st.OutboxBatch(ctx, dest, 1<<62-1, outbox.MaxPDUsPerTxn, outbox.MaxLPDUsPerTxn, outbox.NewBodies())
		if err != nil {
			t.Fatal(err)
		}
		var got []int64
		for _, it := range items {
			got = append(got, it.Seq)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("batch holds seqs %v, want %v", got, want)
		}
	}
}
