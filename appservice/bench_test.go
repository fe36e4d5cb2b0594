package appservice

import (
	"context"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// BenchmarkTransactionIntake measures the durable intake: a PUT of a 10-event transaction over loopback HTTP until
// its 200, which comes only after the SQLite commit (WAL, one writer), and the delivery of every event to the
// handler. It reports the latency of the acknowledgement and the time until the last event was handled.
func BenchmarkTransactionIntake(b *testing.B) {
	const perTxn = 10
	var handled atomic.Int64
	tas := startTestAS(b, filepath.Join(b.TempDir(), "bench.db"), EventHandlerFunc(func(context.Context, *event.Event) error {
		handled.Add(1)
		return nil
	}), 1<<20)
	rooms := []id.RoomID{"!a:hs.test", "!b:hs.test", "!c:hs.test", "!d:hs.test"}
	latencies := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	start := time.Now()
	for i := range b.N {
		events := make([]map[string]any, perTxn)
		for j := range events {
			events[j] = msgEvent(rooms[(i+j)%len(rooms)], id.EventID(fmt.Sprintf("$b%d-%d", i, j)), "benchmark")
		}
		t0 := time.Now()
		resp := tas.put(b, fmt.Sprint(i), txnBody(events...), testHSToken, "")
		latencies = append(latencies, time.Since(t0))
		if resp.status != http.StatusOK {
			b.Fatalf("PUT: %d %s", resp.status, resp.errcode)
		}
	}
	for handled.Load() < int64(b.N*perTxn) {
		time.Sleep(time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	slices.Sort(latencies)
	b.ReportMetric(float64(latencies[len(latencies)/2].Microseconds())/1000, "ack_ms_p50")
	b.ReportMetric(float64(latencies[len(latencies)*99/100].Microseconds())/1000, "ack_ms_p99")
	b.ReportMetric(float64(b.N*perTxn)/elapsed.Seconds(), "events/s")
}
