package provider

import (
	"fmt"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"
)

// BenchmarkHubFanout measures a hub with three followers over HTTPS on loopback: senderCount users on each follower
// send b.N messages between them, concurrently (submitMessage to the hub, which stores and fans each out to the other
// two followers and to its own user). It reports messages/s through the hub (until every copy reached its receiver's callback) and the
// latency from Send to each receiver's callback.
func BenchmarkHubFanout(b *testing.B) {
	for _, senderCount := range []int{1, 4} {
		b.Run(fmt.Sprintf("senders=%d", 3*senderCount), func(b *testing.B) { benchHubFanout(b, senderCount, false) })
	}
}

// BenchmarkHubLatency is the latency the providers add to one message when nothing else is in flight: one user on
// the first follower sends, and each message is sent only once its three copies (the hub's user, the two other
// followers' users) reached their callbacks. p50_ms/p99_ms are Send to callback per copy (two HTTPS requests, four
// providers' storage and MLS work on the way); send_p50_ms/send_p99_ms are Send until the hub's answer.
func BenchmarkHubLatency(b *testing.B) { benchHubFanout(b, 1, true) }

func benchHubFanout(b *testing.B, senderCount int, serial bool) {
	n := newNet(b)
	hub := n.start(b, "hub.example")
	ctx := testContext(b)
	alice, _ := hub.register("alice", "1")
	room, err := hub.p.CreateRoom(ctx, "bench", alice, RoomMetadata{Name: "bench"})
	if err != nil {
		b.Fatal(err)
	}
	var followers, senders []*node
	var users, clients []string
	for i := range 3 {
		f := n.start(b, fmt.Sprintf("f%d.example", i))
		followers = append(followers, f)
		for j := range senderCount {
			u, c := f.register(fmt.Sprintf("user%d", j), "1")
			if err := hub.p.AddUser(ctx, room, alice, u, RoleParticipant); err != nil {
				b.Fatal(err)
			}
			senders, users, clients = append(senders, f), append(users, u), append(clients, c)
		}
	}
	for i, f := range senders {
		f.waitEpoch(room, clients[i], uint64(len(senders)))
	}
	if serial {
		senders, users = senders[:1], users[:1]
	}
	var mu sync.Mutex
	sent := map[string]time.Time{}
	var lat, sendLat []time.Duration
	received := 0
	done := make(chan struct{})
	per := max(b.N/len(users), 1)
	total := per * len(users) * 3 // each message reaches the hub's user and the two other followers
	arrived := make(chan struct{}, total)
	hook := func(m Message) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		lat = append(lat, now.Sub(sent[string(m.Content)]))
		received++
		arrived <- struct{}{}
		if received == total {
			close(done)
		}
	}
	for _, nd := range append([]*node{hub}, followers...) {
		nd.rec.mu.Lock()
		nd.rec.hook = hook
		nd.rec.mu.Unlock()
	}
	msgs := make([][][]byte, len(users))
	for i, u := range users {
		for j := range per {
			msgs[i] = append(msgs[i], text(b, u, room, fmt.Sprintf("message %d from %d", j, i)))
		}
	}
	b.ResetTimer()
	cpu0 := cpuTime(b)
	start := time.Now()
	var wg sync.WaitGroup
	for i, f := range senders {
		wg.Go(func() {
			for _, m := range msgs[i] {
				t0 := time.Now()
				mu.Lock()
				sent[string(m)] = t0
				mu.Unlock()
				if _, err := f.p.Send(ctx, room, users[i], m); err != nil {
					b.Error(err)
					return
				}
				mu.Lock()
				sendLat = append(sendLat, time.Since(t0))
				mu.Unlock()
				for range 3 {
					if !serial {
						break
					}
					select {
					case <-arrived:
					case <-time.After(time.Minute):
						b.Error("a message did not arrive in a minute")
						return
					}
				}
			}
		})
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		b.Fatalf("only %d of %d deliveries", received, total)
	}
	elapsed := time.Since(start)
	cpu := cpuTime(b) - cpu0
	b.StopTimer()
	b.ReportMetric(float64(per*len(users))/elapsed.Seconds(), "msgs/s")
	b.ReportMetric(percentile(lat, 0.5), "p50_ms")
	b.ReportMetric(percentile(lat, 0.99), "p99_ms")
	// The process's CPU time per message (all four providers): what the machine's load does not change much.
	b.ReportMetric(float64(cpu.Microseconds())/float64(per*len(users)), "cpu_us/msg")
	b.ReportMetric(percentile(sendLat, 0.5), "send_p50_ms")
	b.ReportMetric(percentile(sendLat, 0.99), "send_p99_ms")
	b.ReportMetric(0, "ns/op")
}

// percentile is the p-quantile of ds in milliseconds (ds is sorted in place).
func percentile(ds []time.Duration, p float64) float64 {
	slices.Sort(ds)
	return float64(ds[int(p*float64(len(ds)-1))].Microseconds()) / 1000
}

// cpuTime is the user and system CPU time the process used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
