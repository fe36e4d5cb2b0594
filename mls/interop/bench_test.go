package interop_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/mls/interop"
)

// BenchmarkTSMLS measures ts-mls at issue 10's operations and reports each figure as a sub-benchmark, so its
// figures print in the same `go test -bench` run and format as the Go library's:
//
//	go test ./mls/interop -run '^$' -bench TSMLS -benchtime 1x
//
// LMBRIDGE_TSMLS_BENCH_SUITE (default 1), LMBRIDGE_TSMLS_BENCH_SIZES (default 2,16,256,1024) and
// LMBRIDGE_TSMLS_BENCH_RUNS (default 5) change what is measured. ns/op is the median run's time per operation.
func BenchmarkTSMLS(b *testing.B) {
	h := interop.StartT(b)
	opts := interop.BenchOptions{Suite: 1, Runs: 5}
	if v := os.Getenv("LMBRIDGE_TSMLS_BENCH_SUITE"); v != "" {
		n, err := strconv.ParseUint(v, 10, 16)
		if err != nil {
			b.Fatalf("LMBRIDGE_TSMLS_BENCH_SUITE=%q: %v", v, err)
		}
		opts.Suite = uint16(n)
	}
	if v := os.Getenv("LMBRIDGE_TSMLS_BENCH_SIZES"); v != "" {
		for _, s := range strings.Split(v, ",") {
			n, err := strconv.Atoi(strings.TrimSpace(s))
			if err != nil {
				b.Fatalf("LMBRIDGE_TSMLS_BENCH_SIZES=%q: %v", v, err)
			}
			opts.Sizes = append(opts.Sizes, n)
		}
	}
	if v := os.Getenv("LMBRIDGE_TSMLS_BENCH_RUNS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			b.Fatalf("LMBRIDGE_TSMLS_BENCH_RUNS=%q: %v", v, err)
		}
		opts.Runs = n
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	report, err := h.Bench(ctx, opts)
	if err != nil {
		b.Fatal(err)
	}
	var table strings.Builder
	if err = report.Print(&table); err != nil {
		b.Fatal(err)
	}
	b.Logf("\n%s", table.String())
	for _, f := range report.Figures {
		// The sub-benchmark measures nothing itself: it reports ts-mls's figure as its ns/op.
		b.Run(fmt.Sprintf("suite%d/%s/members=%d", report.Suite, f.Op, f.Members), func(b *testing.B) {
			b.ReportMetric(f.MedianMs*1e6, "ns/op")
			b.ReportMetric(f.OpsPerSec, "ops/s")
		})
	}
}

// TestBenchSmall runs the benchmark op at small sizes, so that the benchmark path is proven by every test run: every
// figure is present, positive, and measured over the runs asked for.
func TestBenchSmall(t *testing.T) {
	h := interop.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	report, err := h.Bench(ctx, interop.BenchOptions{Suite: 3, Sizes: []int{2, 8}, JoinSizes: []int{8}, Runs: 3, MsgBatch: 10})
	if err != nil {
		t.Fatal(err)
	}
	if report.Suite != 3 || report.Runs != 3 {
		t.Fatalf("report is for suite %d with %d runs, want suite 3 with 3", report.Suite, report.Runs)
	}
	for _, want := range []struct {
		op      string
		members int
	}{{"commit", 2}, {"process", 2}, {"protect", 2}, {"unprotect", 2}, {"commit", 8}, {"process", 8}, {"protect", 8}, {"unprotect", 8}, {"join", 8}} {
		f, ok := report.Figure(want.op, want.members)
		if !ok {
			t.Fatalf("no %s figure at %d members in %+v", want.op, want.members, report.Figures)
		}
		if f.Runs != 3 || f.MedianMs <= 0 || f.MinMs > f.MedianMs || f.MedianMs > f.MaxMs || f.OpsPerSec <= 0 {
			t.Fatalf("implausible figure %+v", f)
		}
	}
	if len(report.Figures) != 9 {
		t.Fatalf("%d figures, want 9: %+v", len(report.Figures), report.Figures)
	}
	_, err = h.Bench(ctx, interop.BenchOptions{Sizes: []int{1}})
	wantRefused(t, "a benchmark of a one-member group", err)
}
