package config

import (
	"strings"
	"testing"
)

func TestDriverURIAddsStatementCacheForSQLite(t *testing.T) {
	cases := []struct {
		db   Database
		want string
	}{
		{Database{Type: "sqlite3-fk-wal", URI: "file:lm.db?_txlock=immediate"}, "file:lm.db?_txlock=immediate&_stmt_cache_size=64"},
		{Database{Type: "sqlite3-fk-wal", URI: "file:lm.db"}, "file:lm.db?_stmt_cache_size=64"},
		{Database{Type: "sqlite3-fk-wal", URI: "file:lm.db?_stmt_cache_size=8"}, "file:lm.db?_stmt_cache_size=8"},
		{Database{Type: "postgres", URI: "postgres://u@localhost/lmbridge"}, "postgres://u@localhost/lmbridge"},
	}
	for _, c := range cases {
		if got := c.db.DriverURI(); got != c.want {
			t.Errorf("%s %q: got %q, want %q", c.db.Type, c.db.URI, got, c.want)
		}
	}
}

func TestWarnsAboutSeveralSQLiteConnections(t *testing.T) {
	cfg, err := Parse(withMinimal("database: {max_open_conns: 4}"))
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Warnings()
	if len(w) != 1 || !strings.Contains(w[0], "database.max_open_conns") {
		t.Errorf("warnings %q, want one about database.max_open_conns", w)
	}
	cfg, err = Parse(withMinimal("database: {type: postgres, uri: 'postgres://u@localhost/lmbridge', max_open_conns: 4}"))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range cfg.Warnings() {
		if strings.Contains(s, "database.") {
			t.Errorf("unexpected warning for PostgreSQL: %s", s)
		}
	}
}
