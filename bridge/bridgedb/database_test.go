package bridgedb

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"go.mau.fi/util/dbutil"
	_ "go.mau.fi/util/dbutil/litestream"
)

func openTestDB(t testing.TB) *Database {
	t.Helper()
	raw, err := dbutil.NewWithDialect("file:"+filepath.Join(t.TempDir(), "bridge.db")+"?_txlock=immediate", "sqlite3-fk-wal")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = raw.Close() })
	db := New(raw, dbutil.NoopLogger)
	if err := db.Upgrade(context.Background()); err != nil {
		t.Fatal(err)
	}
	return db
}

func TestLinks(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	l := &Link{DAGRoomID: "!dag:hs.example", LMRoomID: "!lm:lm.example.org", HubServer: "lm.example.org",
		Role: RoleHub, Status: LinkActive, CreatedBy: "@alice:hs.example", CreatedAt: now}
	if err := db.InsertLink(ctx, l); err != nil {
		t.Fatal(err)
	}
	for _, dup := range []*Link{
		{DAGRoomID: l.DAGRoomID, LMRoomID: "!other:lm.example.org", HubServer: "x", Role: RoleHub, Status: LinkActive, CreatedAt: now},
		{DAGRoomID: "!other:hs.example", LMRoomID: l.LMRoomID, HubServer: "x", Role: RoleHub, Status: LinkActive, CreatedAt: now},
	} {
		if err := db.InsertLink(ctx, dup); !errors.Is(err, ErrLinkExists) {
			t.Fatalf("duplicate link error = %v", err)
		}
	}
	bad := &Link{DAGRoomID: "!bad:hs.example", LMRoomID: "!bad:lm", Role: "boss", Status: LinkActive, CreatedAt: now}
	if err := db.InsertLink(ctx, bad); err == nil {
		t.Fatal("link with an unknown role was stored")
	}
	got, err := db.GetLinkByLMRoom(ctx, l.LMRoomID)
	if err != nil || got == nil || *got != *l {
		t.Fatalf("GetLinkByLMRoom = %+v, %v; want %+v", got, err, l)
	}
	if err := db.SetLinkError(ctx, l.DAGRoomID, "boom", now); err != nil {
		t.Fatal(err)
	}
	got, _ = db.GetLinkByDAGRoom(ctx, l.DAGRoomID)
	if got.LastError != "boom" || !got.LastErrorAt.Equal(now) {
		t.Fatalf("last error = %q at %v", got.LastError, got.LastErrorAt)
	}
	links, err := db.ListLinks(ctx)
	if err != nil || len(links) != 1 {
		t.Fatalf("ListLinks = %v, %v", links, err)
	}
	if ok, err := db.DeleteLink(ctx, l.DAGRoomID); !ok || err != nil {
		t.Fatalf("DeleteLink = %v, %v", ok, err)
	}
	if ok, _ := db.DeleteLink(ctx, l.DAGRoomID); ok {
		t.Fatal("second DeleteLink found a link")
	}
	if got, err := db.GetLinkByDAGRoom(ctx, l.DAGRoomID); got != nil || err != nil {
		t.Fatalf("link after delete = %v, %v", got, err)
	}
}

func TestEventMap(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t)
	now := time.UnixMilli(time.Now().UnixMilli())
	if err := db.InsertLPDU(ctx, "!dag:hs", "$d1", "!lm:lm", "$lpdu1", "@alice:hs", now); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.GetEventByLM(ctx, "$l1"); got != nil {
		t.Fatal("LM event mapped before its echo")
	}
	if ok, err := db.ConfirmLPDU(ctx, "!dag:hs", "!lm:lm", "$lpdu1", "$l1", now); !ok || err != nil {
		t.Fatalf("ConfirmLPDU = %v, %v", ok, err)
	}
	if ok, _ := db.ConfirmLPDU(ctx, "!dag:hs", "!lm:lm", "$lpdu1", "$l2", now); ok {
		t.Fatal("an LPDU was confirmed twice")
	}
	got, err := db.GetEventByLM(ctx, "$l1")
	if err != nil || got == nil || got.DAGEventID != "$d1" || got.LPDUID != "$lpdu1" {
		t.Fatalf("GetEventByLM = %+v, %v", got, err)
	}
	if err := db.InsertEvent(ctx, &EventMapping{DAGRoomID: "!dag:hs", DAGEventID: "$d1", LMRoomID: "!lm:lm", LMEventID: "$l9", Origin: OriginLM, CreatedAt: now}); err == nil {
		t.Fatal("a DAG event was mapped twice")
	}
	if err := db.InsertEvent(ctx, &EventMapping{DAGRoomID: "!dag:hs", DAGEventID: "$d9", LMRoomID: "!lm:lm", LMEventID: "$l1", Origin: OriginLM, CreatedAt: now}); err == nil {
		t.Fatal("an LM event was mapped twice")
	}
	if err := db.InsertEvent(ctx, &EventMapping{DAGRoomID: "!dag:hs", LMRoomID: "!lm:lm", Origin: OriginLM, CreatedAt: now}); err == nil {
		t.Fatal("a mapping without IDs was stored")
	}
	if got, _ := db.GetEventByDAG(ctx, "$d1"); got == nil || got.LMEventID != "$l1" || got.Sender != "@alice:hs" {
		t.Fatalf("GetEventByDAG = %+v", got)
	}
	// The echo first, then the DAG side's record: they meet in one row.
	if ok, err := db.ConfirmLPDU(ctx, "!dag:hs", "!lm:lm", "$lpdu2", "$l2", now); !ok || err != nil {
		t.Fatalf("early ConfirmLPDU = %v, %v", ok, err)
	}
	if err := db.InsertLPDU(ctx, "!dag:hs", "$d2", "!lm:lm", "$lpdu2", "@alice:hs", now); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.GetEventByLM(ctx, "$l2"); got == nil || got.DAGEventID != "$d2" || got.LPDUID != "$lpdu2" {
		t.Fatalf("late InsertLPDU left %+v", got)
	}
}

func TestProcessedAndGhosts(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t)
	if o, err := db.Processed(ctx, OriginDAG, "$e"); o != "" || err != nil {
		t.Fatalf("fresh Processed = %q, %v", o, err)
	}
	if err := db.MarkProcessed(ctx, OriginDAG, "$e", OutcomeFailed, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := db.MarkProcessed(ctx, OriginDAG, "$e", OutcomeBridged, time.Now()); err != nil {
		t.Fatal(err)
	}
	if o, _ := db.Processed(ctx, OriginDAG, "$e"); o != OutcomeFailed {
		t.Fatalf("Processed = %q, want the first outcome", o)
	}
	if o, _ := db.Processed(ctx, OriginLM, "$e"); o != "" {
		t.Fatal("origins are not kept apart")
	}
	if p, err := db.GetGhostProfile(ctx, "@bob:r"); p != nil || err != nil {
		t.Fatalf("fresh ghost = %v, %v", p, err)
	}
	for _, name := range []string{"Bob", "Robert"} {
		if err := db.PutGhostProfile(ctx, "@bob:r", GhostProfile{Displayname: name}); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := db.GetGhostProfile(ctx, "@bob:r"); p == nil || p.Displayname != "Robert" {
		t.Fatalf("ghost = %+v", p)
	}
}

func TestMappedEventCountsAsProcessed(t *testing.T) {
	ctx := context.Background()
	db := openTestDB(t)
	now := time.Now()
	if err := db.InsertEvent(ctx, &EventMapping{DAGRoomID: "!d:hs", DAGEventID: "$d", LMRoomID: "!l:lm", LMEventID: "$l", Origin: OriginDAG, CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := db.InsertLPDU(ctx, "!d:hs", "$d2", "!l:lm", "$lpdu", "@a:hs", now); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		origin Origin
		id     string
		want   Outcome
	}{{OriginDAG, "$d", OutcomeBridged}, {OriginLM, "$l", OutcomeBridged}, {OriginDAG, "$d2", OutcomeBridged},
		{OriginLM, "$d", ""}, {OriginDAG, "$l", ""}, {OriginLM, "$lpdu", ""}} {
		if got, err := db.Processed(ctx, tc.origin, tc.id); got != tc.want || err != nil {
			t.Errorf("Processed(%s, %s) = %q, %v; want %q", tc.origin, tc.id, got, err, tc.want)
		}
	}
}
