// Package httpguard bounds what an HTTP listener spends on its clients, so that many slow or hostile connections
// can neither grow the process without limit nor starve the good clients: timeouts on every phase of a request, a
// cap on open connections (for the listener and per remote address), bounds on requests in flight (for the
// listener, per remote address until the request is authenticated, per authenticated origin after), and request
// bodies read through a limit into memory that grows only as their bytes arrive, out of a budget the listener's
// requests share. A request over a bound is answered 429 M_LIMIT_EXCEEDED with retry_after_ms at once, so that other
// clients keep being served.
package httpguard

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"
)

// Limits are the bounds of one listener. A zero count or budget means no bound of that kind; a zero timeout means
// none (net/http's meaning).
type Limits struct {
	// ReadHeaderTimeout bounds reading a request's headers.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, headers and body: a body trickled in a byte at a time cannot keep a
	// connection for longer.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its answer, from the end of its headers.
	WriteTimeout time.Duration
	// IdleTimeout bounds how long a kept-alive connection waits for its next request.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request's headers.
	MaxHeaderBytes int
	// MaxConns bounds the open connections of the listener; connections beyond it are closed as they arrive.
	MaxConns int
	// MaxConnsPerIP bounds the open connections from one remote address.
	MaxConnsPerIP int
	// MaxRequests bounds the requests in flight on the listener.
	MaxRequests int
	// MaxRequestsPerIP bounds the requests in flight from one remote address that have not authenticated yet (see
	// Authenticated).
	MaxRequestsPerIP int
	// MaxRequestsPerOrigin bounds the requests in flight of one authenticated origin.
	MaxRequestsPerOrigin int
	// BodyBudget bounds the bytes of request bodies held in memory at once by the listener's requests (see ReadBody).
	BodyBudget int64
	// RetryAfter is the retry_after_ms a refused request is given.
	RetryAfter time.Duration
}

// Guard enforces one listener's Limits. Use Server to build the listener's http.Server, or Handler and ConnState
// to add it to one built elsewhere.
type Guard struct {
	name   string
	limits Limits
	log    *zerolog.Logger

	lock      sync.Mutex
	conns     int
	connsByIP map[netip.Addr]int
	requests  int
	perIP     map[netip.Addr]int
	perOrigin map[string]int
	bodyBytes int64
	// lastConnWarning rate-limits the log line about refused connections.
	lastConnWarning time.Time
	refusedConns    int
	// peakConns is the most connections open at once since memory was last given back (see ConnState).
	peakConns   int
	lastRelease time.Time
}

const (
	// floodConns is how many connections at once make a flood, whose memory is given back to the system once it
	// is over: once the connections are down to floodOverFraction of their peak, and after floodReleaseDelay, for
	// the last of them to close. The Go runtime would otherwise keep most of it for several GC cycles, which an
	// idle process has every two minutes.
	floodConns        = 1024
	floodOverFraction = 8
	floodReleaseDelay = time.Second
)

// New makes a Guard; name says which listener it guards, in the log of ctx.
func New(ctx context.Context, name string, limits Limits) *Guard {
	return &Guard{
		name:      name,
		limits:    limits,
		log:       zerolog.Ctx(ctx),
		connsByIP: make(map[netip.Addr]int),
		perIP:     make(map[netip.Addr]int),
		perOrigin: make(map[string]int),
	}
}

// Limits returns the Guard's limits.
func (g *Guard) Limits() Limits {
	return g.limits
}

// Server builds an http.Server with the Guard's timeouts, its connection caps and handler behind Handler. The
// HTTP/2 receive windows are kept small, because HTTP/2 buffers a stream's body before the handler reads it, outside
// ReadBody's accounting. Callers set BaseContext, ErrorLog and TLSConfig; a ConnState of their own must call the
// Guard's ConnState first.
func (g *Guard) Server(handler http.Handler) *http.Server {
	return &http.Server{
		Handler:           g.Handler(handler),
		ReadHeaderTimeout: g.limits.ReadHeaderTimeout,
		ReadTimeout:       g.limits.ReadTimeout,
		WriteTimeout:      g.limits.WriteTimeout,
		IdleTimeout:       g.limits.IdleTimeout,
		MaxHeaderBytes:    g.limits.MaxHeaderBytes,
		ConnState:         g.ConnState,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          100,
			MaxReceiveBufferPerConnection: http2ReceiveBuffer,
			MaxReceiveBufferPerStream:     http2ReceiveBuffer,
		},
	}
}

// http2ReceiveBuffer is the least HTTP/2 allows per connection: a 1 MiB body still arrives in a few round trips.
const http2ReceiveBuffer = 64 << 10

// ConnState counts the listener's connections and closes those over MaxConns or MaxConnsPerIP as they arrive,
// before any of their bytes is read.
func (g *Guard) ConnState(c net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		ip := addrIP(c.RemoteAddr().String())
		g.lock.Lock()
		g.conns++
		g.connsByIP[ip]++
		over := (g.limits.MaxConns > 0 && g.conns > g.limits.MaxConns) ||
			(g.limits.MaxConnsPerIP > 0 && g.connsByIP[ip] > g.limits.MaxConnsPerIP)
		var warn bool
		var refused int
		if over {
			g.refusedConns++
			if now := time.Now(); now.Sub(g.lastConnWarning) > 10*time.Second {
				g.lastConnWarning, warn, refused = now, true, g.refusedConns
				g.refusedConns = 0
			}
		}
		conns, fromIP := g.conns, g.connsByIP[ip]
		g.peakConns = max(g.peakConns, g.conns)
		g.lock.Unlock()
		if over {
			// Closed here, the connection still goes through StateClosed, which uncounts it.
			_ = c.Close()
			if warn {
				g.log.Warn().Str("listener", g.name).Int("connections", conns).
					Int("from_address", fromIP).Str("address", ip.String()).Int("refused", refused).
					Msg("Too many connections, closing new ones")
			}
		}
	case http.StateClosed, http.StateHijacked:
		ip := addrIP(c.RemoteAddr().String())
		g.lock.Lock()
		g.conns--
		if g.connsByIP[ip]--; g.connsByIP[ip] <= 0 {
			delete(g.connsByIP, ip)
		}
		peak := g.peakConns
		release := peak >= floodConns && g.conns <= peak/floodOverFraction && time.Since(g.lastRelease) > time.Minute
		if release {
			g.peakConns, g.lastRelease = g.conns, time.Now()
		}
		g.lock.Unlock()
		if release {
			time.AfterFunc(floodReleaseDelay, func() {
				debug.FreeOSMemory()
				g.log.Info().Str("listener", g.name).Int("peak_connections", peak).
					Msg("Connection flood is over, gave its memory back to the system")
			})
		}
	}
}

// Handler puts the listener's and the remote address's request bounds in front of next. Requests over them are
// refused with 429 before next sees them; the others carry the Guard in their context for Authenticated and
// ReadBody.
func (g *Guard) Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		st := &request{guard: g, ip: addrIP(r.RemoteAddr)}
		if refusal := g.admit(st); refusal != nil {
			refusal.Write(w, r)
			return
		}
		defer g.finish(st)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestKey{}, st)))
	})
}

// request is what one request in flight holds of the Guard's bounds.
type request struct {
	guard *Guard
	ip    netip.Addr
	// holdsIP says the request counts against its address: until it authenticates.
	holdsIP       bool
	authenticated bool
	origin        string
	bodyBytes     int64
}

type requestKey struct{}

func requestOf(ctx context.Context) *request {
	st, _ := ctx.Value(requestKey{}).(*request)
	return st
}

// InFlight returns how many requests the Guard's handler is serving now.
func (g *Guard) InFlight() int {
	g.lock.Lock()
	defer g.lock.Unlock()
	return g.requests
}

// InFlightFrom returns how many requests from addr count against MaxRequestsPerIP now: in flight and not
// authenticated yet. A test waits on it rather than on time to know that a slow client holds its address's bound.
func (g *Guard) InFlightFrom(addr netip.Addr) int {
	g.lock.Lock()
	defer g.lock.Unlock()
	return g.perIP[addr.Unmap()]
}

func (g *Guard) admit(st *request) *Refusal {
	g.lock.Lock()
	defer g.lock.Unlock()
	if g.limits.MaxRequests > 0 && g.requests >= g.limits.MaxRequests {
		return g.busy("The server is handling too many requests")
	}
	if g.limits.MaxRequestsPerIP > 0 && g.perIP[st.ip] >= g.limits.MaxRequestsPerIP {
		return g.busy("Too many requests from your address at once")
	}
	g.requests++
	g.perIP[st.ip]++
	st.holdsIP = true
	return nil
}

func (g *Guard) finish(st *request) {
	g.lock.Lock()
	defer g.lock.Unlock()
	g.requests--
	g.releaseIP(st)
	if st.origin != "" {
		if g.perOrigin[st.origin]--; g.perOrigin[st.origin] <= 0 {
			delete(g.perOrigin, st.origin)
		}
	}
	g.bodyBytes -= st.bodyBytes
	st.bodyBytes = 0
}

// releaseIP uncounts st from its address; g.lock is held.
func (g *Guard) releaseIP(st *request) {
	if !st.holdsIP {
		return
	}
	st.holdsIP = false
	if g.perIP[st.ip]--; g.perIP[st.ip] <= 0 {
		delete(g.perIP, st.ip)
	}
}

// Authenticated tells the Guard that r has proved who sent it: it stops counting against its remote address and,
// when origin is not empty, counts against origin from now on. It returns a *Refusal when origin has
// MaxRequestsPerOrigin requests in flight already; the caller answers it (Refusal.Write) without handling r. A
// request that did not come through a Guard's Handler is not bounded.
func Authenticated(r *http.Request, origin string) error {
	st := requestOf(r.Context())
	if st == nil || st.authenticated {
		return nil
	}
	g := st.guard
	g.lock.Lock()
	defer g.lock.Unlock()
	st.authenticated = true
	g.releaseIP(st)
	if origin == "" {
		return nil
	}
	if g.limits.MaxRequestsPerOrigin > 0 && g.perOrigin[origin] >= g.limits.MaxRequestsPerOrigin {
		return g.busy("Too many requests from " + origin + " at once")
	}
	g.perOrigin[origin]++
	st.origin = origin
	return nil
}

// busy is a 429 refusal; g.lock is held or not needed.
func (g *Guard) busy(message string) *Refusal {
	return &Refusal{
		Status:     http.StatusTooManyRequests,
		ErrCode:    ErrCodeLimitExceeded,
		Message:    message,
		RetryAfter: g.limits.RetryAfter,
		err:        ErrLimitExceeded,
	}
}

// addrIP is the IP of a host:port remote address; an address that does not parse counts as the zero address.
func addrIP(addr string) netip.Addr {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}
