package bridge

import (
	"context"
	"sync"

	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
)

// linkCache keeps which rooms are linked in memory, including the rooms that are not (most DAG rooms the bot sees),
// so that routing an event costs no query. Every change of a link goes through it; the last error, which only
// !lm status and the provisioning API read, is read from the database.
type linkCache struct {
	lock  sync.RWMutex
	byDAG map[id.RoomID]*bridgedb.Link
	byLM  map[string]*bridgedb.Link
}

func newLinkCache() *linkCache {
	return &linkCache{byDAG: make(map[id.RoomID]*bridgedb.Link), byLM: make(map[string]*bridgedb.Link)}
}

func copyLink(l *bridgedb.Link) *bridgedb.Link {
	if l == nil {
		return nil
	}
	cp := *l
	return &cp
}

// linkByDAG returns a copy of the link of a DAG room, or nil.
func (br *Bridge) linkByDAG(ctx context.Context, roomID id.RoomID) (*bridgedb.Link, error) {
	br.links.lock.RLock()
	l, ok := br.links.byDAG[roomID]
	br.links.lock.RUnlock()
	if ok {
		return copyLink(l), nil
	}
	l, err := br.db.GetLinkByDAGRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	br.links.lock.Lock()
	br.links.byDAG[roomID] = l
	if l != nil {
		br.links.byLM[l.LMRoomID] = l
	}
	br.links.lock.Unlock()
	return copyLink(l), nil
}

// linkByLM returns a copy of the link of an LM room, or nil.
func (br *Bridge) linkByLM(ctx context.Context, roomID string) (*bridgedb.Link, error) {
	br.links.lock.RLock()
	l, ok := br.links.byLM[roomID]
	br.links.lock.RUnlock()
	if ok {
		return copyLink(l), nil
	}
	l, err := br.db.GetLinkByLMRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	br.links.lock.Lock()
	br.links.byLM[roomID] = l
	if l != nil {
		br.links.byDAG[l.DAGRoomID] = l
	}
	br.links.lock.Unlock()
	return copyLink(l), nil
}

// insertLink stores a new link and caches it.
func (br *Bridge) insertLink(ctx context.Context, l *bridgedb.Link) error {
	br.links.lock.Lock()
	defer br.links.lock.Unlock()
	if err := br.db.InsertLink(ctx, l); err != nil {
		return err
	}
	br.links.byDAG[l.DAGRoomID] = copyLink(l)
	br.links.byLM[l.LMRoomID] = br.links.byDAG[l.DAGRoomID]
	return nil
}

// deleteLink removes a link and caches its absence.
func (br *Bridge) deleteLink(ctx context.Context, l *bridgedb.Link) error {
	br.links.lock.Lock()
	defer br.links.lock.Unlock()
	if _, err := br.db.DeleteLink(ctx, l.DAGRoomID); err != nil {
		return err
	}
	br.links.byDAG[l.DAGRoomID] = nil
	br.links.byLM[l.LMRoomID] = nil
	return nil
}

// activateLink marks a portal link active.
func (br *Bridge) activateLink(ctx context.Context, l *bridgedb.Link) error {
	br.links.lock.Lock()
	defer br.links.lock.Unlock()
	if err := br.db.ActivateLink(ctx, l.DAGRoomID); err != nil {
		return err
	}
	active := copyLink(l)
	active.Status, active.PendingUser = bridgedb.LinkActive, ""
	br.links.byDAG[l.DAGRoomID] = active
	br.links.byLM[l.LMRoomID] = active
	return nil
}
