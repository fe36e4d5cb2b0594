package tesths_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/internal/testpg"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if err := testpg.StopShared(); err != nil {
		fmt.Fprintln(os.Stderr, "failed to stop PostgreSQL:", err)
		code = 1
	}
	os.Exit(code)
}

// TestPauseFreezesServer pauses each homeserver: a request then gets no answer, and after Resume it does; Stop works
// on a paused server.
func TestPauseFreezesServer(t *testing.T) {
	tesths.ForEachKind(t, func(t *testing.T, kind tesths.Kind) {
		hs := tesths.StartT(t, kind, tesths.Options{})
		client := &http.Client{Timeout: 2 * time.Second}
		versions := hs.URL + "/_matrix/client/versions"
		if err := hs.Pause(); err != nil {
			t.Fatal(err)
		}
		if resp, err := client.Get(versions); err == nil {
			resp.Body.Close()
			t.Fatalf("a paused %s answered %s", kind, resp.Status)
		}
		if err := hs.Resume(); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Get(versions)
		if err != nil {
			t.Fatalf("%s did not answer after Resume: %v", kind, err)
		}
		resp.Body.Close()
		if err = hs.Pause(); err != nil {
			t.Fatal(err)
		}
		stopped := time.Now()
		if err = hs.Stop(); err != nil {
			t.Fatalf("Stop of a paused %s: %v", kind, err)
		}
		t.Logf("a paused %s stopped in %s", kind, time.Since(stopped).Round(time.Millisecond))
		if err = hs.Resume(); err == nil {
			t.Error("Resume of a stopped server did not fail")
		}
	})
}

// TestDendriteOnPostgres starts Dendrite with its tables on PostgreSQL: it registers a user and creates a room, and
// it made none of its SQLite files.
func TestDendriteOnPostgres(t *testing.T) {
	testpg.RequireT(t)
	tesths.RequireKind(t, tesths.Dendrite)
	hs := tesths.StartT(t, tesths.Dendrite, tesths.Options{DendritePostgres: testpg.NewDatabaseT(t)})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	client := hs.RegisterUserT(t, "pguser", "pguser-password", false)
	if _, err := client.CreateRoom(ctx, nil); err != nil {
		t.Fatalf("failed to create a room: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(hs.Dir, "*.db"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Errorf("Dendrite on PostgreSQL made SQLite files %v", files)
	}
}
