package bridge

import (
	"sync"
	"time"
)

// refusedLPDUs remembers the LPDUs hubs refused for echoWait, which is as long as LMEventOf would wait for them.
type refusedLPDUs struct {
	lock sync.Mutex
	at   map[string]time.Time
}

// add records a refusal and forgets those older than echoWait.
func (r *refusedLPDUs) add(lpduID string, now time.Time) {
	r.lock.Lock()
	defer r.lock.Unlock()
	if r.at == nil {
		r.at = make(map[string]time.Time)
	}
	for id, at := range r.at {
		if now.Sub(at) > echoWait {
			delete(r.at, id)
		}
	}
	r.at[lpduID] = now
}

func (r *refusedLPDUs) has(lpduID string) bool {
	r.lock.Lock()
	defer r.lock.Unlock()
	_, ok := r.at[lpduID]
	return ok
}
