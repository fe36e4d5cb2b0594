package auth

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/lmbridge/lmbridge/linearize/pdu"
	"github.com/lmbridge/lmbridge/linearize/sigverify"
)

const (
	benchHub         = "hub.example"
	benchParticipant = "participant.example"
	benchKeyID       = "ed25519:1"
)

// benchRoom is a hub's room with 1,000 joined members, 999 of them on the participant server.
func benchRoom(b *testing.B) *State {
	b.Helper()
	s := NewState()
	creator := "@alice:" + benchHub
	apply := func(ev *pdu.PDU) {
		ev.RoomID = "!room:" + benchHub
		if err := Check(s, ev); err != nil {
			b.Fatal(err)
		}
		id := fmt.Sprintf("$event%d", s.Length())
		if err := s.Apply(id, ev); err != nil {
			b.Fatal(err)
		}
	}
	create := createEvent()
	create.Sender = creator
	apply(create)
	apply(member(creator, creator, MembershipJoin))
	pl := powerLevels(creator, `{"users":{"@alice:hub.example":100},"invite":0}`)
	pl.Sender = creator
	apply(pl)
	jr := joinRules(JoinRulePublic)
	jr.Sender = creator
	apply(jr)
	for i := 1; i < 1000; i++ {
		user := fmt.Sprintf("@user%d:%s", i, benchParticipant)
		apply(member(user, user, MembershipJoin))
	}
	if n := len(s.JoinedMembers()); n != 1000 {
		b.Fatalf("%d members", n)
	}
	return s
}

func benchKey(name string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(name))
	return ed25519.NewKeyFromSeed(seed[:])
}

// BenchmarkHubHotPath is the hub's work per LPDU received: parse the bytes, verify the participant's signature and
// LPDU hash (§5.1), run the auth rules against a room of 1,000 members, select auth events, complete the PDU
// (content hash, hub signature, event ID) and serialise it for fan-out.
func BenchmarkHubHotPath(b *testing.B) {
	s := benchRoom(b)
	partKey, hubKey := benchKey(benchParticipant), benchKey(benchHub)
	keys := pdu.StaticKeys{
		benchParticipant: {benchKeyID: partKey.Public().(ed25519.PublicKey)},
		benchHub:         {benchKeyID: hubKey.Public().(ed25519.PublicKey)},
	}
	lpdu := mk("@user500:"+benchParticipant, "m.room.message", nil,
		`{"msgtype":"m.text","body":"Hello from the participant side, a message of ordinary length for a chat room."}`)
	lpdu.RoomID = "!room:" + benchHub
	lpdu.OriginServerTS = 1700000000000
	lpdu.HubServer = benchHub
	if err := lpdu.FillLPDUHash(); err != nil {
		b.Fatal(err)
	}
	if err := lpdu.SignLPDU(benchParticipant, benchKeyID, partKey); err != nil {
		b.Fatal(err)
	}
	raw, err := lpdu.Canonical()
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var outBytes int
	b.ReportAllocs()
	b.ResetTimer()
	cpuStart := processCPUTime()
	for b.Loop() {
		ev, err := pdu.Parse(raw)
		if err != nil {
			b.Fatal(err)
		}
		res, err := pdu.VerifyReceived(ctx, keys, ev)
		if err != nil || res.Redacted {
			b.Fatalf("verify: %v %+v", err, res)
		}
		if err := Check(s, ev); err != nil {
			b.Fatal(err)
		}
		id, err := ev.Complete(SelectAuthEvents(s, ev), s.LastEventID(), benchHub, benchKeyID, hubKey)
		if err != nil {
			b.Fatal(err)
		}
		out, err := ev.Canonical()
		if err != nil {
			b.Fatal(err)
		}
		outBytes = len(out)
		if err := s.Apply(id, ev); err != nil {
			b.Fatal(err)
		}
	}
	// CPU time per event is reported beside wall time: on a shared machine wall time also measures the neighbours.
	b.ReportMetric(float64((processCPUTime()-cpuStart).Microseconds())/float64(b.N), "cpu-µs/event")
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(outBytes), "pdu-bytes")
}

// processCPUTime is the user+system CPU time of this process so far.
func processCPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkEd25519Floor is the cryptographic floor of the hot path: one verify plus one sign.
func BenchmarkEd25519Floor(b *testing.B) {
	key := benchKey("floor")
	pub := key.Public().(ed25519.PublicKey)
	msg := make([]byte, 400)
	sig := ed25519.Sign(key, msg)
	b.ReportAllocs()
	cpuStart := processCPUTime()
	for b.Loop() {
		if !ed25519.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
		_ = ed25519.Sign(key, msg)
	}
	b.ReportMetric(float64((processCPUTime()-cpuStart).Microseconds())/float64(b.N), "cpu-µs/event")
}

// BenchmarkEd25519FloorTables is the floor the hot path now has: one verify by linearize/sigverify (the key's table
// built beforehand, as for a participant that sends again and again) plus one sign.
func BenchmarkEd25519FloorTables(b *testing.B) {
	key := benchKey("floor")
	pub := key.Public().(ed25519.PublicKey)
	msg := make([]byte, 400)
	sig := ed25519.Sign(key, msg)
	sigverify.Verify(pub, msg, sig)
	sigverify.Verify(pub, msg, sig)
	b.ReportAllocs()
	cpuStart := processCPUTime()
	for b.Loop() {
		if !sigverify.Verify(pub, msg, sig) {
			b.Fatal("verify failed")
		}
		_ = ed25519.Sign(key, msg)
	}
	b.ReportMetric(float64((processCPUTime()-cpuStart).Microseconds())/float64(b.N), "cpu-µs/event")
}

// BenchmarkCheckMessage is the auth check alone for a message in the 1,000-member room.
func BenchmarkCheckMessage(b *testing.B) {
	s := benchRoom(b)
	ev := message("@user500:" + benchParticipant)
	ev.RoomID = "!room:" + benchHub
	b.ReportAllocs()
	for b.Loop() {
		if err := Check(s, ev); err != nil {
			b.Fatal(err)
		}
		_ = SelectAuthEvents(s, ev)
	}
}

// BenchmarkStateClone is the cost of a per-event snapshot of the 1,000-member room's state.
func BenchmarkStateClone(b *testing.B) {
	s := benchRoom(b)
	b.ReportAllocs()
	for b.Loop() {
		_ = s.Clone()
	}
}
