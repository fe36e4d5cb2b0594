package upgrades_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"testing/fstest"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/database"
	"github.com/lmbridge/lmbridge/mimi/provider/upgrades"
)

func openDB(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), "mimi.db") + "?_txlock=immediate", MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db.Database
}

var sqlComment = regexp.MustCompile(`--[^\n]*`)

// schemaOf returns the database's sqlite_master (without the version table), with comments and layout taken out of
// the SQL.
func schemaOf(t *testing.T, db *dbutil.Database) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE 'mimi_version%'`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := make(map[string]string)
	for rows.Next() {
		var typ, name, table, sql string
		if err = rows.Scan(&typ, &name, &table, &sql); err != nil {
			t.Fatal(err)
		}
		sql = strings.Join(strings.Fields(sqlComment.ReplaceAllString(sql, "")), " ")
		sql = strings.ReplaceAll(strings.ReplaceAll(strings.ReplaceAll(sql, "( ", "("), " )", ")"), " ,", ",")
		out[typ+" "+name] = table + ": " + sql
	}
	if err = rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestLatestEqualsStepByStep checks that 00-latest.sql makes the database that the numbered upgrades make from
// version 1 (testdata/01-v1.sql, the schema as it was then), and that it is at the last version.
func TestLatestEqualsStepByStep(t *testing.T) {
	ctx := context.Background()
	head, err := os.ReadFile("00-latest.sql")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("-- v0 -> v%d:", len(upgrades.Table)); !strings.HasPrefix(string(head), want) {
		t.Fatalf("00-latest.sql starts %q, want %q: it must make the last version in one step",
			strings.SplitN(string(head), "\n", 2)[0], want)
	}
	latest := openDB(t)
	if err := latest.Child("mimi_version", upgrades.Table, nil).Upgrade(ctx); err != nil {
		t.Fatal(err)
	}

	steps := fstest.MapFS{}
	v1, err := os.ReadFile("testdata/01-v1.sql")
	if err != nil {
		t.Fatal(err)
	}
	steps["00-v1.sql"] = &fstest.MapFile{Data: v1}
	files, err := filepath.Glob("0[1-9]-*.sql")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range files {
		data, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		steps[name] = &fstest.MapFile{Data: data}
	}
	if len(files) != len(upgrades.Table)-1 {
		t.Fatalf("%d numbered upgrades for %d versions", len(files), len(upgrades.Table))
	}
	stepTable := dbutil.BuildUpgradeTable().WithFS(steps).Finish()
	stepwise := openDB(t)
	if err = stepwise.Child("mimi_version", stepTable, nil).Upgrade(ctx); err != nil {
		t.Fatal(err)
	}

	want, got := schemaOf(t, stepwise), schemaOf(t, latest)
	for key, w := range want {
		if g, ok := got[key]; !ok {
			t.Errorf("00-latest.sql lacks %s: %s", key, w)
		} else if g != w {
			t.Errorf("%s differs:\n  00-latest:    %s\n  step by step: %s", key, g, w)
		}
	}
	for key, g := range got {
		if _, ok := want[key]; !ok {
			t.Errorf("00-latest.sql has %s, which the upgrades do not make: %s", key, g)
		}
	}
	for _, db := range []*dbutil.Database{latest, stepwise} {
		var version int
		if err = db.QueryRow(ctx, `SELECT version FROM mimi_version`).Scan(&version); err != nil {
			t.Fatal(err)
		} else if version != len(upgrades.Table) {
			t.Errorf("version %d, want %d", version, len(upgrades.Table))
		}
	}
}
