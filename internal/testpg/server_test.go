package testpg

import (
	"context"
	"database/sql"
	"os"
	"strconv"
	"testing"

	"go.mau.fi/util/dbutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := StopShared(); err != nil {
		println("failed to stop PostgreSQL:", err.Error())
		code = 1
	}
	os.Exit(code)
}

// TestServer starts a server of its own, checks that it is PostgreSQL on loopback, and that Stop ends it and removes
// its files.
func TestServer(t *testing.T) {
	RequireT(t)
	ctx := context.Background()
	srv, err := Start(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	uri, err := srv.CreateDatabase(ctx, "Mixed_Case")
	if err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("postgres", uri)
	if err != nil {
		t.Fatal(err)
	}
	var version, addr, dbname string
	if err = db.QueryRow(`SELECT current_setting('server_version'), current_setting('listen_addresses'), current_database()`).Scan(&version, &addr, &dbname); err != nil {
		t.Fatal(err)
	}
	t.Logf("PostgreSQL %s on %s, database %s", version, addr, dbname)
	if addr != "127.0.0.1" || dbname != "Mixed_Case" {
		t.Errorf("listening on %q with database %q, want 127.0.0.1 and Mixed_Case", addr, dbname)
	}
	_ = db.Close()
	pid := srv.cmd.Process.Pid
	if err = srv.Stop(); err != nil {
		t.Fatal(err)
	}
	if _, err = os.Stat(srv.dir); !os.IsNotExist(err) {
		t.Errorf("data directory %s still there after Stop: %v", srv.dir, err)
	}
	if _, err = os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
		t.Errorf("postgres pid %d still running after Stop", pid)
	}
}

// TestNewDatabaseT checks that each test gets its own empty database on the shared server, usable through dbutil
// with the postgres dialect.
func TestNewDatabaseT(t *testing.T) {
	first, second := NewDatabaseT(t), NewDatabaseT(t)
	if first == second {
		t.Fatalf("two calls gave the same database %s", first)
	}
	for _, uri := range []string{first, second} {
		db, err := dbutil.NewWithDialect(uri, "postgres")
		if err != nil {
			t.Fatal(err)
		}
		if db.Dialect != dbutil.Postgres {
			t.Errorf("dialect %s, want postgres", db.Dialect)
		}
		var tables int
		if err = db.QueryRow(context.Background(), `SELECT COUNT(*) FROM information_schema.tables WHERE table_schema='public'`).Scan(&tables); err != nil {
			t.Fatal(err)
		}
		if tables != 0 {
			t.Errorf("fresh database %s has %d tables", uri, tables)
		}
		if _, err = db.Exec(context.Background(), `CREATE TABLE marker (id BIGINT PRIMARY KEY)`); err != nil {
			t.Fatal(err)
		}
		_ = db.Close()
	}
}
