package linearize

import (
	"encoding/json"
	"sync"
)

// fanoutBodiesMax bounds the PDUs held for fan-out.
const fanoutBodiesMax = 4096

// fanoutBodies holds, as hub, the canonical form of each event appended with fan-out rows until every destination's
// transaction carrying it has succeeded, so that the outbox sends it without reading it back from lm_event once per
// destination.
type fanoutBodies struct {
	lock sync.Mutex
	m    map[string]*fanoutBody
}

type fanoutBody struct {
	raw json.RawMessage
	// refs is how many outbox rows (destinations) have not yet sent the event.
	refs int
}

func newFanoutBodies() *fanoutBodies {
	return &fanoutBodies{m: make(map[string]*fanoutBody)}
}

// add holds raw for refs destinations; it reports whether it did (false when already held). When full (destinations
// far behind, or bodies whose rows went away otherwise), it starts over: what it forgets is read from the log.
func (f *fanoutBodies) add(eventID string, raw json.RawMessage, refs int) bool {
	f.lock.Lock()
	defer f.lock.Unlock()
	if _, ok := f.m[eventID]; ok {
		return false
	}
	if len(f.m) >= fanoutBodiesMax {
		f.m = make(map[string]*fanoutBody)
	}
	f.m[eventID] = &fanoutBody{raw: raw, refs: refs}
	return true
}

func (f *fanoutBodies) get(eventID string) (json.RawMessage, bool) {
	f.lock.Lock()
	defer f.lock.Unlock()
	b, ok := f.m[eventID]
	if !ok {
		return nil, false
	}
	return b.raw, true
}

// release records that one destination has sent the event; the last one drops it.
func (f *fanoutBodies) release(eventID string) {
	f.lock.Lock()
	defer f.lock.Unlock()
	if b, ok := f.m[eventID]; ok {
		if b.refs--; b.refs <= 0 {
			delete(f.m, eventID)
		}
	}
}

// drop forgets an event whose append did not commit.
func (f *fanoutBodies) drop(eventID string) {
	f.lock.Lock()
	defer f.lock.Unlock()
	delete(f.m, eventID)
}
