package group

import (
	"fmt"
	"testing"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// benchGroup makes a group of n members, all added by its creator in one
// commit (so parents off the creator's path are blank, the worst case for
// a committer's encryptions), and returns the creator and the member at
// the last leaf.
func benchGroup(b *testing.B, s *ciphersuite.Suite, n int) (creator, last *Group) {
	b.Helper()
	alice, _, _ := newMember(b, s, "alice")
	a, err := Create(Config{}, s, []byte("bench"), alice, nil)
	if err != nil {
		b.Fatal(err)
	}
	if n == 1 {
		return a, nil
	}
	kps := make([]*wire.KeyPackage, n-1)
	var lastKP *wire.KeyPackage
	var lastPriv *KeyPackagePrivate
	for i := range kps {
		_, kps[i], lastPriv = newMember(b, s, fmt.Sprintf("m%d", i))
		lastKP = kps[i]
	}
	res, err := a.Commit(CommitOptions{Add: kps, RatchetTreeInWelcome: true})
	if err != nil {
		b.Fatal(err)
	}
	if err := a.MergePendingCommit(); err != nil {
		b.Fatal(err)
	}
	m, err := Join(Config{}, res.Welcome, lastKP, lastPriv, JoinOptions{})
	if err != nil {
		b.Fatal(err)
	}
	return a, m
}

var benchSizes = []int{2, 16, 256, 1024}

// BenchmarkCommitCreate is a member committing with a path (no proposals)
// and merging it.
func BenchmarkCommitCreate(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			a, _ := benchGroup(b, s, n)
			b.ReportAllocs()
			b.ResetTimer()
			for range b.N {
				res, err := a.Commit(CommitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				_ = codec.Marshal(res.Commit)
				if err := a.MergePendingCommit(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkCommitProcess is a member processing another's commit with a
// path: decode, verify, decrypt the path secret, new tree, key schedule.
func BenchmarkCommitProcess(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			a, m := benchGroup(b, s, n)
			// The commits are made first, so that timing and allocation
			// figures are the receiver's alone.
			encs := make([][]byte, b.N)
			for i := range encs {
				res, err := a.Commit(CommitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := a.MergePendingCommit(); err != nil {
					b.Fatal(err)
				}
				encs[i] = codec.Marshal(res.Commit)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				var msg wire.MLSMessage
				if err := codec.Unmarshal(encs[i], &msg); err != nil {
					b.Fatal(err)
				}
				if _, err := m.Process(&msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkJoin is a new member joining a group of 256 from a Welcome with
// the ratchet tree in it (decrypting, verifying the whole tree, deriving
// the epoch).
func BenchmarkJoin(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	a, _ := benchGroup(b, s, 255)
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		_, kp, priv := newMember(b, s, "joiner")
		res, err := a.Commit(CommitOptions{Add: []*wire.KeyPackage{kp}, RatchetTreeInWelcome: true, NoPath: true})
		if err != nil {
			b.Fatal(err)
		}
		a.DiscardPendingCommit()
		enc := codec.Marshal(&wire.MLSMessage{Welcome: res.Welcome})
		b.StartTimer()
		var msg wire.MLSMessage
		if err := codec.Unmarshal(enc, &msg); err != nil {
			b.Fatal(err)
		}
		if _, err := Join(Config{}, msg.Welcome, kp, priv, JoinOptions{}); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkProtect and BenchmarkUnprotect are an application message of
// 256 bytes in a group of 16.
func BenchmarkProtect(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	a, _ := benchGroup(b, s, 16)
	msg := make([]byte, 256)
	b.ReportAllocs()
	for b.Loop() {
		m, err := a.Protect(msg, nil)
		if err != nil {
			b.Fatal(err)
		}
		_ = codec.Marshal(m)
	}
}

func BenchmarkUnprotect(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	a, m := benchGroup(b, s, 16)
	msg := make([]byte, 256)
	encs := make([][]byte, b.N)
	for i := range encs {
		pm, err := a.Protect(msg, nil)
		if err != nil {
			b.Fatal(err)
		}
		encs[i] = codec.Marshal(pm)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		var w wire.MLSMessage
		if err := codec.Unmarshal(encs[i], &w); err != nil {
			b.Fatal(err)
		}
		if _, err := m.Process(&w); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCommitProcessLoaded is BenchmarkCommitProcess for a member
// freshly loaded from its saved state before each commit (a server that
// keeps groups in a database and not in memory).
func BenchmarkCommitProcessLoaded(b *testing.B) {
	s, _ := ciphersuite.Lookup(1)
	for _, n := range []int{256, 1024} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			a, m := benchGroup(b, s, n)
			encs := make([][]byte, b.N)
			for i := range encs {
				res, err := a.Commit(CommitOptions{})
				if err != nil {
					b.Fatal(err)
				}
				if err := a.MergePendingCommit(); err != nil {
					b.Fatal(err)
				}
				encs[i] = codec.Marshal(res.Commit)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				b.StopTimer()
				loaded, err := UnmarshalState(m.MarshalState(), Config{})
				if err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				var msg wire.MLSMessage
				if err := codec.Unmarshal(encs[i], &msg); err != nil {
					b.Fatal(err)
				}
				if _, err := loaded.Process(&msg); err != nil {
					b.Fatal(err)
				}
				m = loaded
			}
		})
	}
}
