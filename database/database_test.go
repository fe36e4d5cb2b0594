package database

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/config"
)

func openTemp(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "lmbridge.db")
	db, err := Open(context.Background(), config.Database{Type: "sqlite3-fk-wal", URI: "file:" + path + "?_txlock=immediate",
		MaxOpenConns: 1, MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	return db, path
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return st.Size()
}

// writeMegabyte commits 1 MiB of rows, which stays in the WAL until a checkpoint copies it.
func writeMegabyte(t *testing.T, db *DB) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Exec(ctx, "CREATE TABLE IF NOT EXISTS filler (data BLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	chunk := []byte(strings.Repeat("x", 4096))
	for i := 0; i < 256; i++ {
		if _, err := db.Exec(ctx, "INSERT INTO filler (data) VALUES ($1)", chunk); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWritersDoNotCheckpoint(t *testing.T) {
	db, _ := openTemp(t)
	defer db.Close()
	var pages int
	if err := db.QueryRow(context.Background(), "PRAGMA wal_autocheckpoint").Scan(&pages); err != nil {
		t.Fatal(err)
	}
	if pages != 0 {
		t.Fatalf("the pool's connection checkpoints every %d pages itself", pages)
	}
	var mode string
	if err := db.QueryRow(context.Background(), "PRAGMA journal_mode").Scan(&mode); err != nil {
		t.Fatal(err)
	}
	if mode != "wal" {
		t.Fatalf("journal mode is %q, want wal", mode)
	}
}

func TestCheckpointerCopiesTheWALInTheBackground(t *testing.T) {
	db, path := openTemp(t)
	defer db.Close()
	writeMegabyte(t, db)
	deadline := time.Now().Add(5 * time.Second)
	for fileSize(t, path) < 1<<20 {
		if time.Now().After(deadline) {
			t.Fatalf("the database file is still %d bytes: nothing was checkpointed", fileSize(t, path))
		}
		time.Sleep(CheckpointInterval)
	}
}

func TestCloseCheckpointsWhatIsLeft(t *testing.T) {
	db, path := openTemp(t)
	// Stop the loop first, so that only Close's own checkpoint can copy the rows written next.
	db.checkpointer.stop()
	<-db.checkpointer.done
	writeMegabyte(t, db)
	before := fileSize(t, path)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if after := fileSize(t, path); after < 1<<20 || before >= 1<<20 {
		t.Fatalf("database file %d bytes before Close and %d after, want under and over 1 MiB", before, after)
	}
}

func TestPostgresHasNoCheckpointer(t *testing.T) {
	// sql.Open does not connect, so this needs no server.
	db, err := Open(context.Background(), config.Database{Type: "postgres", URI: "postgres://127.0.0.1:1/none?sslmode=disable",
		MaxOpenConns: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if db.checkpointer != nil {
		t.Fatal("a PostgreSQL database got a SQLite checkpointer")
	}
}

func TestSynchronousLevelPerType(t *testing.T) {
	for typ, want := range map[string]int{"sqlite3-fk-wal": 1, "sqlite3-fk-wal-fullsync": 2} {
		path := filepath.Join(t.TempDir(), "lmbridge.db")
		db, err := Open(context.Background(), config.Database{Type: typ, URI: "file:" + path + "?_txlock=immediate", MaxOpenConns: 1})
		if err != nil {
			t.Fatal(err)
		}
		var level, fk int
		if err = db.QueryRow(context.Background(), "PRAGMA synchronous").Scan(&level); err != nil {
			t.Fatal(err)
		}
		if err = db.QueryRow(context.Background(), "PRAGMA foreign_keys").Scan(&fk); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
		if level != want || fk != 1 {
			t.Errorf("%s: synchronous %d, foreign_keys %d; want %d and 1", typ, level, fk, want)
		}
	}
}

// TestWALStaysBoundedUnderContinuousWrites writes without pause while the checkpointer runs: a passive checkpoint
// never catches up with such a writer, so without the restart the WAL would hold everything written.

func TestWALStaysBoundedUnderContinuousWrites(t *testing.T) {
	defer func(frames int) { walRestartFrames = frames }(walRestartFrames)
	walRestartFrames = 256
	db, path := openTemp(t)
	defer db.Close()
	ctx := context.Background()
	if _, err := db.Exec(ctx, "CREATE TABLE filler (data BLOB NOT NULL)"); err != nil {
		t.Fatal(err)
	}
	// A few MB/s, in commits about a millisecond apart, for a couple of seconds.
	const rowSize, rowsPerTxn, total = 3000, 2, 8 << 20
	row := []byte(strings.Repeat("x", rowSize))
	largest := int64(0)
	for written := 0; written < total; written += rowSize * rowsPerTxn {
		err := db.DoTxn(ctx, nil, func(ctx context.Context) error {
			for range rowsPerTxn {
				if _, err := db.Exec(ctx, "INSERT INTO filler (data) VALUES ($1)", row); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		largest = max(largest, fileSize(t, path+"-wal"))
		time.Sleep(500 * time.Microsecond)
	}
	if largest > total/2 {
		t.Fatalf("the WAL grew to %d bytes while %d were written: it was never started over", largest, total)
	}
	t.Logf("WAL at most %d bytes for %d written", largest, total)
}
