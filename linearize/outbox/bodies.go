package outbox

import (
	"encoding/json"
	"sync"
)

// bodiesMax bounds the PDUs held for fan-out.
const bodiesMax = 4096

// Bodies holds, as hub, the canonical form of each event appended with fan-out rows until every destination's
// transaction carrying it has succeeded, so that the outbox sends it without reading it back from lm_event once per
// destination.
type Bodies struct {
	lock sync.Mutex
	m    map[string]*body
}

type body struct {
	raw json.RawMessage
	// refs is how many outbox rows (destinations) have not yet sent the event.
	refs int
}

// NewBodies returns an empty Bodies.
func NewBodies() *Bodies {
	return &Bodies{m: make(map[string]*body)}
}

// Add holds raw for refs destinations; it reports whether it did (false when already held). When full (destinations
// far behind, or bodies whose rows went away otherwise), it starts over: what it forgets is read from the log.
func (f *Bodies) Add(eventID string, raw json.RawMessage, refs int) bool {
	f.lock.Lock()
	defer f.lock.Unlock()
	if _, ok := f.m[eventID]; ok {
		return false
	}
	if len(f.m) >= bodiesMax {
		f.m = make(map[string]*body)
	}
	f.m[eventID] = &body{raw: raw, refs: refs}
	return true
}

// Get returns the body held for eventID.
func (f *Bodies) Get(eventID string) (json.RawMessage, bool) {
	f.lock.Lock()
	defer f.lock.Unlock()
	b, ok := f.m[eventID]
	if !ok {
		return nil, false
	}
	return b.raw, true
}

// Release records that one destination has sent the event; the last one drops it.
func (f *Bodies) Release(eventID string) {
	f.lock.Lock()
	defer f.lock.Unlock()
	if b, ok := f.m[eventID]; ok {
		if b.refs--; b.refs <= 0 {
			delete(f.m, eventID)
		}
	}
}

// Drop forgets an event whose append did not commit.
func (f *Bodies) Drop(eventID string) {
	f.lock.Lock()
	defer f.lock.Unlock()
	delete(f.m, eventID)
}

// Len counts the bodies held, for the tests.
func (f *Bodies) Len() int {
	f.lock.Lock()
	defer f.lock.Unlock()
	return len(f.m)
}
