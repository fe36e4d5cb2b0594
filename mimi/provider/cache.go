package provider

import (
	"context"
	"sync"

	"github.com/lmbridge/lmbridge/mls/group"
)

// localRoom is a room's lock on the follower side and what is kept in memory under it: the local clients with a
// group in the room and their decoded groups. Decoding a client's state is most of the cost of applying one
// message, so the hot paths (sending, applying notify bodies of application messages) keep the groups here across
// calls. The database stays the truth: every change to a cached group is stored in the same transaction that
// answers for it, and whatever fails after a cached group changed (or whatever changes the set of clients) calls
// reset, so that the next use reads the stored state again.
type localRoom struct {
	sync.Mutex
	loaded  bool
	clients []string
	groups  map[string]*group.Group
}

func (p *Provider) roomLock(room string) *localRoom {
	m, _ := p.roomLocks.LoadOrStore(room, new(localRoom))
	return m.(*localRoom)
}

// reset forgets what is cached (the lock must be held).
func (lr *localRoom) reset() { lr.loaded, lr.clients, lr.groups = false, nil, nil }

// list is the room's local clients (the lock must be held).
func (lr *localRoom) list(ctx context.Context, p *Provider, room string) ([]string, error) {
	if !lr.loaded {
		clients, err := p.roomClients(ctx, room)
		if err != nil {
			return nil, err
		}
		lr.loaded, lr.clients, lr.groups = true, clients, map[string]*group.Group{}
	}
	return lr.clients, nil
}

// group is a local client's group in the room (the lock must be held); the caller stores any change it makes.
func (lr *localRoom) group(ctx context.Context, p *Provider, room, client string) (*group.Group, error) {
	if _, err := lr.list(ctx, p, room); err != nil {
		return nil, err
	}
	if g := lr.groups[client]; g != nil {
		return g, nil
	}
	g, err := p.loadGroup(ctx, room, client)
	if err != nil {
		return nil, err
	}
	lr.groups[client] = g
	return g, nil
}
