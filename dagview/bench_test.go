package dagview

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/event"
)

// BenchmarkHandleEvent measures the view's own work per event, as the appservice's room worker calls it: append to
// the stream (SQLite, WAL), apply state, call the listener (a no-op here), mark delivered. The inbox and HTTP are
// excluded; see appservice's BenchmarkTransactionIntake for those.
func BenchmarkHandleEvent(b *testing.B) {
	f := newFixtureTB(b)
	ctx := zerolog.Nop().WithContext(context.Background())
	if err := f.view.Seed(ctx, roomID); err != nil {
		b.Fatal(err)
	}
	events := make([]*event.Event, b.N)
	for i := range events {
		raw, _ := json.Marshal(textEvent(fmt.Sprintf("$bench%d", i), "benchmark"))
		events[i] = &event.Event{}
		if err := json.Unmarshal(raw, events[i]); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for _, evt := range events {
		if err := f.view.HandleEvent(ctx, evt); err != nil {
			b.Fatal(err)
		}
	}
}
