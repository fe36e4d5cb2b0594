package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"
	"maunium.net/go/mautrix/federation"
)

// Resolved says how to reach a server name (§12.3).
type Resolved struct {
	ServerName string
	// Scheme is "https", or "http" for a host:port peer when plain-HTTP peers are allowed.
	Scheme string
	// Host is the Host header and TLS server name: the server name, or the name it delegates to by well-known.
	Host string
	// Addrs are the host:port pairs to dial, in order of preference.
	Addrs   []string
	Expires time.Time
}

// SRVResolver is the part of *net.Resolver that resolution uses; tests give a fake.
type SRVResolver interface {
	LookupSRV(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)
}

const (
	wellKnownDefaultCache = 24 * time.Hour
	wellKnownMaxCache     = 48 * time.Hour
	wellKnownErrorCache   = time.Hour
	wellKnownMaxBytes     = 64 * 1024
	wellKnownTimeout      = 10 * time.Second
)

var ErrInvalidServerName = errors.New("invalid server name")

// Resolver turns server names into addresses: an IP literal or explicit port is used as is; otherwise
// /.well-known/matrix/server is asked, then SRV _matrix-fed._tcp and _matrix._tcp, then port 8448.
type Resolver struct {
	// HTTP fetches well-known documents; it must not follow redirects to plain HTTP.
	HTTP *http.Client
	DNS  SRVResolver
	// AllowHTTPPeers lets host:port server names be reached over plain HTTP (config lm.allow_http_peers).
	AllowHTTPPeers bool
	// WellKnownURL gives the URL of a hostname's well-known document; tests point it at a loopback server.
	WellKnownURL func(hostname string) string
	Now          func() time.Time

	lock  sync.Mutex
	cache map[string]*Resolved
}

// NewResolver makes a Resolver with the system DNS and the wall clock.
func NewResolver(httpClient *http.Client, allowHTTPPeers bool) *Resolver {
	return &Resolver{HTTP: httpClient, DNS: net.DefaultResolver, AllowHTTPPeers: allowHTTPPeers, Now: time.Now}
}

func (r *Resolver) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

// Resolve returns how to reach serverName, from the cache while it is fresh.
func (r *Resolver) Resolve(ctx context.Context, serverName string) (*Resolved, error) {
	now := r.now()
	r.lock.Lock()
	cached, ok := r.cache[serverName]
	r.lock.Unlock()
	if ok && now.Before(cached.Expires) {
		return cached, nil
	}
	res, err := r.resolve(ctx, serverName, now)
	if err != nil {
		return nil, err
	}
	r.lock.Lock()
	if r.cache == nil {
		r.cache = make(map[string]*Resolved)
	}
	r.cache[serverName] = res
	r.lock.Unlock()
	return res, nil
}

func (r *Resolver) resolve(ctx context.Context, serverName string, now time.Time) (*Resolved, error) {
	host, port, ok := federation.ParseServerName(serverName)
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrInvalidServerName, serverName)
	}
	res := &Resolved{ServerName: serverName, Scheme: "https", Host: serverName, Expires: now.Add(wellKnownDefaultCache)}
	// Step 1: an IP literal or an explicit port is used as is.
	if port != 0 || net.ParseIP(host) != nil {
		if port != 0 && r.AllowHTTPPeers {
			res.Scheme = "http"
		}
		res.Addrs = []string{joinHostPort(host, port)}
		return res, nil
	}
	// Step 2: well-known delegation.
	delegated, expires, err := r.wellKnown(ctx, host, now)
	res.Expires = expires
	if err != nil {
		zerolog.Ctx(ctx).Debug().Err(err).Str("server_name", serverName).Msg("No usable well-known delegation")
	} else {
		dHost, dPort, ok := federation.ParseServerName(delegated)
		if !ok {
			zerolog.Ctx(ctx).Debug().Str("server_name", serverName).Str("m.server", delegated).
				Msg("Ignoring invalid well-known delegation")
		} else {
			res.Host = delegated
			host = dHost
			if dPort != 0 || net.ParseIP(dHost) != nil {
				res.Addrs = []string{joinHostPort(dHost, dPort)}
				return res, nil
			}
		}
	}
	// Step 3: SRV, the current name first, then the one the draft knows.
	if r.DNS != nil {
		for _, service := range []string{"matrix-fed", "matrix"} {
			_, records, err := r.DNS.LookupSRV(ctx, service, "tcp", host)
			if err != nil || len(records) == 0 {
				continue
			}
			for _, rec := range records {
				target := strings.TrimSuffix(rec.Target, ".")
				if target == "" {
					continue
				}
				res.Addrs = append(res.Addrs, net.JoinHostPort(target, strconv.Itoa(int(rec.Port))))
			}
			if len(res.Addrs) > 0 {
				return res, nil
			}
		}
	}
	// Step 4: port 8448.
	res.Addrs = []string{joinHostPort(host, 0)}
	return res, nil
}

func joinHostPort(host string, port uint16) string {
	if port == 0 {
		port = 8448
	}
	return net.JoinHostPort(host, strconv.Itoa(int(port)))
}

func (r *Resolver) wellKnown(ctx context.Context, hostname string, now time.Time) (string, time.Time, error) {
	errExpiry := now.Add(wellKnownErrorCache)
	if r.HTTP == nil {
		return "", errExpiry, errors.New("no HTTP client for well-known")
	}
	url := "https://" + hostname + "/.well-known/matrix/server"
	if r.WellKnownURL != nil {
		url = r.WellKnownURL(hostname)
	}
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", errExpiry, fmt.Errorf("failed to prepare well-known request: %w", err)
	}
	resp, err := r.HTTP.Do(req)
	if err != nil {
		return "", errExpiry, fmt.Errorf("failed to fetch well-known: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", errExpiry, fmt.Errorf("well-known answered %d", resp.StatusCode)
	}
	var body struct {
		Server string `json:"m.server"`
	}
	if err = json.NewDecoder(io.LimitReader(resp.Body, wellKnownMaxBytes)).Decode(&body); err != nil {
		return "", errExpiry, fmt.Errorf("failed to decode well-known: %w", err)
	} else if body.Server == "" {
		return "", errExpiry, errors.New("well-known has no m.server")
	}
	return body.Server, now.Add(cacheLifetime(resp.Header.Get("Cache-Control"))), nil
}

// cacheLifetime reads max-age, defaulting to 24 h and capped at 48 h as §12.3 asks.
func cacheLifetime(cacheControl string) time.Duration {
	for part := range strings.SplitSeq(cacheControl, ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch strings.ToLower(name) {
		case "no-cache", "no-store":
			return 0
		case "max-age":
			if secs, err := strconv.Atoi(value); err == nil && secs >= 0 {
				return min(time.Duration(secs)*time.Second, wellKnownMaxCache)
			}
		}
	}
	return wellKnownDefaultCache
}
