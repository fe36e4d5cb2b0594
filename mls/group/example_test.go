package group_test

import (
	"fmt"

	"github.com/lmbridge/lmbridge/mls/ciphersuite"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/group"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// Alice creates a group, adds Bob from his KeyPackage, and they exchange a
// message. Every message crosses the "network" as bytes.
func Example() {
	s, _ := ciphersuite.Lookup(ciphersuite.MLS128DHKEMX25519AES128GCMSHA256Ed25519)

	alice, _ := group.NewIdentity(s, []byte("alice"))
	a, _ := group.Create(group.Config{}, s, []byte("room"), alice, nil)

	bob, _ := group.NewIdentity(s, []byte("bob"))
	kp, kpPriv, _ := group.NewKeyPackage(s, bob)
	kpBytes := codec.Marshal(&wire.MLSMessage{KeyPackage: kp})

	// Alice adds Bob; the delivery service accepts the commit.
	var km wire.MLSMessage
	_ = codec.Unmarshal(kpBytes, &km)
	res, _ := a.Commit(group.CommitOptions{Add: []*wire.KeyPackage{km.KeyPackage}, RatchetTreeInWelcome: true})
	_ = a.MergePendingCommit()
	welcome := codec.Marshal(&wire.MLSMessage{Welcome: res.Welcome})

	// Bob joins from the Welcome.
	var wm wire.MLSMessage
	_ = codec.Unmarshal(welcome, &wm)
	b, err := group.Join(group.Config{}, wm.Welcome, kp, kpPriv, group.JoinOptions{})
	if err != nil {
		fmt.Println("join:", err)
		return
	}

	msg, _ := b.Protect([]byte("hi alice"), nil)
	var m wire.MLSMessage
	_ = codec.Unmarshal(codec.Marshal(msg), &m)
	p, _ := a.Process(&m)
	fmt.Printf("epoch %d, leaf %d says %q\n", a.Epoch(), p.Sender.LeafIndex, p.ApplicationData)
	// Output: epoch 1, leaf 1 says "hi alice"
}
