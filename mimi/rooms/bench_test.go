package rooms

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/internal/testca"
	"github.com/lmbridge/lmbridge/mimi/content"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/remote"
)

// nopListener takes every event.
type nopListener struct{}

func (nopListener) OnEvent(context.Context, *remote.Event) error         { return nil }
func (nopListener) OnInvite(context.Context, *remote.Invite) error       { return nil }
func (nopListener) OnLPDUFailed(context.Context, string, string, string) {}

func percentiles(ds []time.Duration) (p50, p99 float64) {
	slices.Sort(ds)
	at := func(p float64) float64 { return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000 }
	return at(0.5), at(0.99)
}

// BenchmarkMatrixToMIMI measures what the MIMI side adds to a send from Matrix: SendRoomEvent of a formatted reply
// (Matrix content to MIMI content, the send row, the hub's acceptance, the accepted mark and the caller's With in one
// transaction) beside provider.Send of content of the same size alone, alternating, on a room this provider hubs
// (SQLite, one connection). The difference is the bridge's share.
func BenchmarkMatrixToMIMI(b *testing.B) {
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(b)}
	a := n.start(b, "mimi-a.test")
	ctx := a.ctx
	alice := remote.UserID("@alice=hs-a:mimi-a.test")
	room, err := a.r.NewRoom(ctx, alice, nil)
	if err != nil {
		b.Fatal(err)
	}
	roomURI, _ := RoomURI(room)
	aliceURI, _ := UserURI(alice)
	first, err := a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message",
		Content: map[string]any{"msgtype": "m.text", "body": "first"}})
	if err != nil {
		b.Fatal(err)
	}
	var full, base []time.Duration
	b.ResetTimer()
	for i := range b.N {
		c := map[string]any{"msgtype": "m.text", "body": fmt.Sprintf("reply %d", i), "format": "org.matrix.custom.html",
			"formatted_body": fmt.Sprintf("<strong>reply</strong> %d", i),
			"m.relates_to":   map[string]any{"m.in_reply_to": map[string]any{"event_id": string(first)}}}
		t0 := time.Now()
		if _, err := a.r.SendRoomEvent(ctx, &remote.SendRequest{Room: room, Sender: alice, Type: "m.room.message", Content: c,
			Key: fmt.Sprintf("$dag%d", i), With: func(context.Context, remote.EventID) error { return nil }}); err != nil {
			b.Fatal(err)
		}
		full = append(full, time.Since(t0))
		salt, _ := content.NewSalt(nil)
		m := &content.Message{Salt: salt, TopicID: []byte{}, Body: content.NestedPart{Disposition: content.DispositionRender,
			Part: &content.SinglePart{ContentType: content.TypeMarkdown, Content: fmt.Appendf(nil, "__reply__ %d", i)}}}
		enc, _ := m.Encode()
		t0 = time.Now()
		if _, err := a.r.Provider().Send(ctx, roomURI, aliceURI, enc); err != nil {
			b.Fatal(err)
		}
		base = append(base, time.Since(t0))
	}
	b.StopTimer()
	f50, f99 := percentiles(full)
	b50, b99 := percentiles(base)
	b.ReportMetric(f50, "send_p50_ms")
	b.ReportMetric(f99, "send_p99_ms")
	b.ReportMetric(b50, "provider_p50_ms")
	b.ReportMetric(b99, "provider_p99_ms")
	b.ReportMetric(0, "ns/op")
}

// BenchmarkMIMIToMatrix measures what the MIMI side adds to a message from another provider before the bridge gets
// it: OnMessage as the provider's inbox calls it (decoding the content, its message ID, MIMI to Matrix content, the
// message row, the event's JSON) with a listener that takes it at once.
func BenchmarkMIMIToMatrix(b *testing.B) {
	n := &testNet{ports: map[string]string{}, ca: testca.NewT(b)}
	a := n.start(b, "mimi-a.test")
	a.r.SetListener(nopListener{})
	ctx := a.ctx
	cb := &callbacks{r: a.r}
	room, sender := provider.RoomURI("mimi-b.test", "bench"), provider.UserURI("mimi-b.test", "bob")
	msgs := make([][]byte, b.N)
	for i := range msgs {
		salt, _ := content.NewSalt(nil)
		m := &content.Message{Salt: salt, TopicID: []byte{}, Body: content.NestedPart{Disposition: content.DispositionRender,
			Part: &content.SinglePart{ContentType: content.TypeMarkdown, Content: fmt.Appendf(nil, "__hello__ [alice](mimi://mimi-a.test/u/alice=hs-a) %d", i)}}}
		if i > 0 {
			prev, _ := content.ComputeMessageID(idScheme, sender, room, msgs[i-1])
			m.InReplyTo = &prev
		}
		msgs[i], _ = m.Encode()
	}
	var lat []time.Duration
	b.ResetTimer()
	for i := range b.N {
		t0 := time.Now()
		if err := cb.OnMessage(ctx, provider.Message{Room: room, Sender: sender, Content: msgs[i], HubTime: time.Now()}); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(t0))
	}
	b.StopTimer()
	p50, p99 := percentiles(lat)
	b.ReportMetric(p50, "p50_ms")
	b.ReportMetric(p99, "p99_ms")
	b.ReportMetric(0, "ns/op")
}
