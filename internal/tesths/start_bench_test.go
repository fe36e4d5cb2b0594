package tesths_test

import (
	"context"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/internal/tesths"
)

// BenchmarkStart measures a homeserver's start-up, from Start to the first 200 from /versions (including config and
// key generation), and its Stop, on each installed kind.
func BenchmarkStart(b *testing.B) {
	for _, kind := range tesths.Kinds {
		b.Run(string(kind), func(b *testing.B) {
			tesths.RequireKind(b, kind)
			var startTotal, stopTotal time.Duration
			for b.Loop() {
				t0 := time.Now()
				hs, err := tesths.Start(context.Background(), kind, b.TempDir(), tesths.Options{})
				if err != nil {
					b.Fatalf("failed to start %s: %v", kind, err)
				}
				t1 := time.Now()
				if err = hs.Stop(); err != nil {
					b.Fatalf("failed to stop %s: %v", kind, err)
				}
				startTotal += t1.Sub(t0)
				stopTotal += time.Since(t1)
			}
			b.ReportMetric(startTotal.Seconds()/float64(b.N), "s/start")
			b.ReportMetric(stopTotal.Seconds()/float64(b.N), "s/stop")
		})
	}
}
