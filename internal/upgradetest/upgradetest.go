// Package upgradetest checks an upgrades package's migrations: that its 00-latest.sql makes the same database as
// the numbered upgrades applied one by one.
package upgradetest

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
)

func openDB(t *testing.T) *dbutil.Database {
	t.Helper()
	db, err := database.Open(context.Background(), config.Database{Type: "sqlite3-fk-wal",
		URI: "file:" + filepath.Join(t.TempDir(), "upgrades.db") + "?_txlock=immediate", MaxIdleConns: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = db.Close() })
	return db.Database
}

var sqlComment = regexp.MustCompile(`--[^\n]*`)

// schemaOf returns the database's sqlite_master (without the version table), with comments and layout taken out of
// the SQL.
func schemaOf(t *testing.T, db *dbutil.Database, versionTable string) map[string]string {
	t.Helper()
	ctx := context.Background()
	rows, err := db.Query(ctx, `SELECT type, name, tbl_name, COALESCE(sql, '') FROM sqlite_master WHERE name NOT LIKE $1`, versionTable+"%")
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

// LatestEqualsStepByStep checks, in an upgrades package's directory (a test's working directory), that
// 00-latest.sql makes the database that the numbered upgrades make from version 1 (testdata/01-v1.sql, the schema as
// it was then), and that both are at the last version of table, kept in versionTable.
func LatestEqualsStepByStep(t *testing.T, table dbutil.UpgradeTable, versionTable string) {
	t.Helper()
	ctx := context.Background()
	head, err := os.ReadFile("00-latest.sql")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("-- v0 -> v%d:", len(table)); !strings.HasPrefix(string(head), want) {
		t.Fatalf("00-latest.sql starts %q, want %q: it must make the last version in one step",
			strings.SplitN(string(head), "\n", 2)[0], want)
	}
	latest := openDB(t)
	if err := latest.Child(versionTable, table, nil).Upgrade(ctx); err != nil {
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
	if len(files) != len(table)-1 {
		t.Fatalf("%d numbered upgrades for %d versions", len(files), len(table))
	}
	stepTable := dbutil.BuildUpgradeTable().WithFS(steps).Finish()
	stepwise := openDB(t)
	if err = stepwise.Child(versionTable, stepTable, nil).Upgrade(ctx); err != nil {
		t.Fatal(err)
	}

	want, got := schemaOf(t, stepwise, versionTable), schemaOf(t, latest, versionTable)
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
		if err = db.QueryRow(ctx, "SELECT version FROM "+versionTable).Scan(&version); err != nil {
			t.Fatal(err)
		} else if version != len(table) {
			t.Errorf("version %d, want %d", version, len(table))
		}
	}
}
