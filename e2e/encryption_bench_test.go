//go:build goolm

package e2e

import (
	"context"
	"flag"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/internal/cpustat"
	"github.com/lmbridge/lmbridge/internal/tesths"
	"github.com/lmbridge/lmbridge/linearize"
)

// encBench is the number of events each way of TestEncryptionCPUPerEvent; 0 skips it. It is a test rather than a
// Benchmark because its stack (a homeserver, two LM engines, a Node client) is built with the e2e helpers, which
// take a *testing.T, and is built once for all four figures.
var encBench = flag.Int("enc.bench", 0, "events per direction for TestEncryptionCPUPerEvent (0 skips it)")

// TestEncryptionCPUPerEvent prints the CPU time of this process (lmbridge's parts and the peer LM engine; not the
// homeserver, not the Node client) per bridged event, in a plaintext and in an encrypted linked room, each way, on
// Dendrite. The difference is what end-to-bridge encryption costs: a Megolm decryption per DAG → LM event, a Megolm
// encryption per LM → DAG event (and a key share when the session rotates).
func TestEncryptionCPUPerEvent(t *testing.T) {
	if *encBench <= 0 {
		t.Skip("run with -enc.bench N (events per direction) to measure")
	}
	tesths.RequireKind(t, tesths.Dendrite)
	n := *encBench
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ctx = zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).WithContext(ctx)
	st := startEncStack(ctx, t, tesths.Dendrite, sqliteDB)
	alice := st.hs.RegisterUserT(t, "alice", "alice-password", false)
	phone := startJSClient(t, "alice-phone")
	phone.must("login", map[string]any{"baseUrl": st.hs.URL, "user": "alice", "password": "alice-password"})
	bob := "@bob:" + st.peer.ServerName()
	ghost, _ := st.users.GhostOf(bob)
	links := map[bool]*bridgedb.Link{}
	for _, encrypted := range []bool{false, true} {
		room := id.RoomID(str(phone.must("createRoom", map[string]any{"name": fmt.Sprint("bench encrypted=", encrypted),
			"encrypted": encrypted, "invite": []string{string(st.bot)}}), "roomId"))
		phone.must("waitJoined", map[string]any{"roomId": room, "userId": st.bot, "timeoutMs": 60000})
		raisePower(ctx, t, alice, room, st.bot)
		phone.must("send", map[string]any{"roomId": room, "body": "!lm link"})
		links[encrypted] = waitLink(ctx, t, st, room)
		phone.must("invite", map[string]any{"roomId": room, "userId": ghost})
		peerJoin(ctx, t, st, links[encrypted], bob)
		phone.must("waitJoined", map[string]any{"roomId": room, "userId": ghost, "timeoutMs": 60000})
		// One event each way first, so that session set-up (Olm sessions, the first key share) is not counted.
		exchangeIn(ctx, t, st, phone, links[encrypted], bob, fmt.Sprint("warm-up ", encrypted), encrypted)
	}
	// What the process burns with nothing to bridge (the device's /sync, the engines' timers, the test's polling),
	// per second: the runs last as long as the Node client takes, so their figures are given net of it too.
	idleCPU, idleWall, _ := measure(t, func() { time.Sleep(10 * time.Second) })
	idleRate := float64(idleCPU) / float64(idleWall)
	t.Logf("%d events per run; CPU is this process's user+system time per event, and net of the idle %.1f ms/s",
		n, idleRate*1000)
	net := func(cpu, wall time.Duration) float64 {
		return (float64(cpu) - idleRate*float64(wall)) / float64(time.Microsecond) / float64(n)
	}
	for _, encrypted := range []bool{false, true} {
		link := links[encrypted]
		cpu, wall, steal := measure(t, func() {
			for i := range n {
				sendLM(ctx, t, st, link, bob, fmt.Sprintf("lm %v %d", encrypted, i))
			}
			phone.must("waitMessage", map[string]any{"roomId": link.DAGRoomID, "body": fmt.Sprintf("lm %v %d", encrypted, n-1),
				"timeoutMs": 300000})
		})
		t.Logf("LM → DAG encrypted=%-5v cpu-µs/event %7.0f  net %7.0f  wall %6.2fs  steal-%% %4.1f", encrypted,
			float64(cpu.Microseconds())/float64(n), net(cpu, wall), wall.Seconds(), steal)
		cpu, wall, steal = measure(t, func() {
			for i := range n {
				phone.must("send", map[string]any{"roomId": link.DAGRoomID, "body": fmt.Sprintf("dag %v %d", encrypted, i)})
			}
			last := fmt.Sprintf("dag %v %d", encrypted, n-1)
			waitUntil(t, 300*time.Second, "the last DAG message on LM", func() bool {
				return st.peer.find(func(ev *linearize.Event) bool { return ev.RoomID == link.LMRoomID && lmBody(ev) == last }) != nil
			})
		})
		t.Logf("DAG → LM encrypted=%-5v cpu-µs/event %7.0f  net %7.0f  wall %6.2fs  steal-%% %4.1f", encrypted,
			float64(cpu.Microseconds())/float64(n), net(cpu, wall), wall.Seconds(), steal)
	}
}

// measure runs fn and returns the process's CPU time, the wall time and the machine's steal share meanwhile.
func measure(t *testing.T, fn func()) (cpu, wall time.Duration, steal float64) {
	t.Helper()
	machineStart, err := cpustat.Read()
	if err != nil {
		t.Fatal(err)
	}
	cpuStart, start := rusageCPU(t), time.Now()
	fn()
	cpu, wall = rusageCPU(t)-cpuStart, time.Since(start)
	machineEnd, err := cpustat.Read()
	if err != nil {
		t.Fatal(err)
	}
	return cpu, wall, cpustat.StealPercent(machineStart, machineEnd)
}

func rusageCPU(t *testing.T) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
