package interop

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
)

// BenchOptions says what Bench measures. Zero values take the defaults of issue 10's benchmark set.
type BenchOptions struct {
	// Suite is the ciphersuite (default 1).
	Suite uint16 `json:"suite,omitempty"`
	// Sizes are the group sizes for commit, process, protect and unprotect (default 2, 16, 256, 1024).
	Sizes []int `json:"sizes,omitempty"`
	// JoinSizes are the group sizes, counting the joiner, for join (default 256). NoJoin measures no join at all.
	JoinSizes []int `json:"joinSizes,omitempty"`
	NoJoin    bool  `json:"-"`
	// Runs is how many times each figure is measured; the median is reported (default 5).
	Runs int `json:"runs,omitempty"`
	// MsgSize is the application message's length in bytes (default 256).
	MsgSize int `json:"msgSize,omitempty"`
	// MsgBatch is how many consecutive messages one protect or unprotect run times (default 100).
	MsgBatch int `json:"msgBatch,omitempty"`
}

// BenchFigure is one measured operation at one group size.
type BenchFigure struct {
	// Op is "commit" (an empty commit with a path, PublicMessage), "process" (that commit at another member),
	// "protect" or "unprotect" (an application message), or "join" (from a Welcome with the ratchet tree).
	Op      string `json:"op"`
	Members int    `json:"members"`
	Runs    int    `json:"runs"`
	// OpsPerRun is how many operations one run timed (MsgBatch for protect and unprotect, else 1).
	OpsPerRun int     `json:"opsPerRun"`
	MedianMs  float64 `json:"medianMs"`
	MinMs     float64 `json:"minMs"`
	MaxMs     float64 `json:"maxMs"`
	OpsPerSec float64 `json:"opsPerSec"`
}

// BenchReport is what Bench measured.
type BenchReport struct {
	Implementation string        `json:"implementation"`
	Node           string        `json:"node"`
	Suite          uint16        `json:"suite"`
	Runs           int           `json:"runs"`
	MsgSize        int           `json:"msgSize"`
	Figures        []BenchFigure `json:"figures"`
}

// Figure returns the figure for op at members, if measured.
func (r BenchReport) Figure(op string, members int) (BenchFigure, bool) {
	for _, f := range r.Figures {
		if f.Op == op && f.Members == members {
			return f, true
		}
	}
	return BenchFigure{}, false
}

// Print writes the figures as a table.
func (r BenchReport) Print(w io.Writer) error {
	fmt.Fprintf(w, "%s on Node %s, suite %d, median of %d runs, %d-byte messages\n", r.Implementation, r.Node, r.Suite, r.Runs, r.MsgSize)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tmembers\tms/op\tops/s\t")
	for _, f := range r.Figures {
		fmt.Fprintf(tw, "%s\t%d\t%.3f\t%.1f\t\n", f.Op, f.Members, f.MedianMs, f.OpsPerSec)
	}
	return tw.Flush()
}

// Bench measures ts-mls in the harness process (see tsmls/README.md, "Benchmark", for the group shape each figure is
// measured on, which the Go library's benchmarks reproduce). At 1,024 members it takes on the order of a minute;
// bound it with ctx.
func (h *Harness) Bench(ctx context.Context, opts BenchOptions) (BenchReport, error) {
	req := opts
	if opts.NoJoin {
		req.JoinSizes = []int{}
	}
	params := map[string]any{}
	if req.Suite != 0 {
		params["suite"] = req.Suite
	}
	if req.Sizes != nil {
		params["sizes"] = req.Sizes
	}
	if req.JoinSizes != nil {
		params["joinSizes"] = req.JoinSizes
	}
	if req.Runs != 0 {
		params["runs"] = req.Runs
	}
	if req.MsgSize != 0 {
		params["msgSize"] = req.MsgSize
	}
	if req.MsgBatch != 0 {
		params["msgBatch"] = req.MsgBatch
	}
	var r BenchReport
	if err := h.Call(ctx, "bench", params, &r); err != nil {
		return BenchReport{}, fmt.Errorf("failed to benchmark ts-mls: %w", err)
	}
	return r, nil
}
