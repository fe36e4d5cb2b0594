package media

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

func openStore(t *testing.T, path string) (*store, func()) {
	t.Helper()
	raw, err := dbutil.NewWithDialect("file:"+path+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	s := newStore(raw)
	if err = s.upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return s, func() { _ = raw.Close() }
}

// TestStoreKeepsCopiesAcrossRestarts: a copy recorded is found again after the database is closed and opened (a
// restarted lmbridge fetches nothing twice), and a second copy of the same file does not replace the first.
func TestStoreKeepsCopiesAcrossRestarts(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "media.db")
	s, closeDB := openStore(t, path)
	if local, err := s.local(ctx, "mxc://lm.example/a"); err != nil || local != "" {
		t.Fatalf("before any copy: %q, %v", local, err)
	}
	if err := s.put(ctx, "mxc://lm.example/a", "mxc://hs.example/first", "image/png", 10, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.put(ctx, "mxc://lm.example/a", "mxc://hs.example/second", "image/png", 10, time.Now()); err != nil {
		t.Fatal(err)
	}
	closeDB()
	s, closeDB = openStore(t, path)
	defer closeDB()
	if local, err := s.local(ctx, "mxc://lm.example/a"); err != nil || local != "mxc://hs.example/first" {
		t.Errorf("after a restart: %q, %v, want the first copy", local, err)
	}
}
