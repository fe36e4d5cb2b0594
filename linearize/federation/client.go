package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"time"
)

// UnstablePrefix is where the draft puts the endpoints it marks U (§5 of our spec summary).
const UnstablePrefix = "/_matrix/federation/unstable/org.matrix.i-d.ralston-mimi-linearized-matrix.02"

const (
	// DefaultClientTimeout bounds one federation request, including reading its answer.
	DefaultClientTimeout = 60 * time.Second
	// DefaultMaxResponseBytes bounds an answer; send_join answers carry whole timelines (eigen), so it is generous.
	DefaultMaxResponseBytes = 64 << 20
	// MaxServerKeysBytes bounds a key answer, which is a few hundred bytes per key: a request naming any origin
	// makes us fetch that origin's keys, so the answer is read through a small bound, never the general one.
	MaxServerKeysBytes = 64 << 10
	// maxErrorAnswerBytes bounds the body of a non-2xx answer, a Matrix error object.
	maxErrorAnswerBytes = 64 << 10
	userAgent           = "lmbridge"
)

// ClientOptions configures NewClient.
type ClientOptions struct {
	// AllowHTTPPeers lets host:port server names be reached over plain HTTP (config lm.allow_http_peers).
	AllowHTTPPeers bool
	// TLSConfig is the base TLS configuration (tests add their CA here); nil means the system roots.
	TLSConfig *tls.Config
	// Timeout bounds each request; zero means DefaultClientTimeout.
	Timeout time.Duration
	// DNS resolves SRV records; nil means the system resolver.
	DNS SRVResolver
	// WellKnownURL overrides where a hostname's well-known document is fetched (tests).
	WellKnownURL func(hostname string) string
	// BlockedRanges are addresses no connection may go to (config lm.ip_range_blocklist), checked on the address
	// actually dialled, after DNS, so a name that resolves differently on the second lookup cannot slip through.
	BlockedRanges []netip.Prefix
}

// Client speaks to other LM servers: one method per endpoint, signed with our key, over pooled connections.
type Client struct {
	ServerName string
	Key        *SigningKey
	Resolver   *Resolver
	HTTP       *http.Client
	// MaxResponseBytes bounds an answer body.
	MaxResponseBytes int64
	// EventID, when set, computes an event's ID; Backfill uses it to put newest-first answers (eigen) in log order.
	// Without it Backfill falls back to origin_server_ts.
	EventID func(event json.RawMessage) (string, error)

	dialer  net.Dialer
	lock    sync.Mutex
	targets map[string][]string
}

// NewClient makes a Client signing as serverName with key.
func NewClient(serverName string, key *SigningKey, opts ClientOptions) *Client {
	c := &Client{
		ServerName:       serverName,
		Key:              key,
		MaxResponseBytes: DefaultMaxResponseBytes,
		dialer:           net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second},
		targets:          make(map[string][]string),
	}
	if len(opts.BlockedRanges) > 0 {
		c.dialer.Control = refuseBlocked(opts.BlockedRanges)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultClientTimeout
	}
	tlsConfig := opts.TLSConfig.Clone()
	if tlsConfig == nil {
		tlsConfig = &tls.Config{}
	}
	if tlsConfig.MinVersion == 0 {
		tlsConfig.MinVersion = tls.VersionTLS13
	}
	transport := &http.Transport{
		DialContext:           c.dial,
		TLSClientConfig:       tlsConfig,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          200,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
	noRedirects := func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.HTTP = &http.Client{Transport: transport, Timeout: opts.Timeout, CheckRedirect: noRedirects}
	wellKnownHTTP := &http.Client{
		Transport: &http.Transport{TLSClientConfig: tlsConfig, DialContext: c.dialer.DialContext, IdleConnTimeout: 30 * time.Second},
		Timeout:   wellKnownTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Scheme != "https" || len(via) > 5 {
				return errors.New("refusing well-known redirect")
			}
			return nil
		},
	}
	c.Resolver = NewResolver(wellKnownHTTP, opts.AllowHTTPPeers)
	if opts.DNS != nil {
		c.Resolver.DNS = opts.DNS
	}
	c.Resolver.WellKnownURL = opts.WellKnownURL
	return c
}

// dial connects to the addresses that resolution found for the URL's host, in order.
func (c *Client) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.lock.Lock()
	targets := c.targets[addr]
	c.lock.Unlock()
	if len(targets) == 0 {
		targets = []string{addr}
	}
	var errs []error
	for _, target := range targets {
		conn, err := c.dialer.DialContext(ctx, network, target)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("failed to connect to %s: %w", addr, errors.Join(errs...))
}

func (c *Client) baseURL(ctx context.Context, destination string) (string, error) {
	res, err := c.Resolver.Resolve(ctx, destination)
	if err != nil {
		return "", fmt.Errorf("failed to resolve %s: %w", destination, err)
	}
	host, port, err := net.SplitHostPort(res.Host)
	if err != nil {
		host, port = strings.Trim(res.Host, "[]"), map[string]string{"https": "443", "http": "80"}[res.Scheme]
	}
	c.lock.Lock()
	c.targets[net.JoinHostPort(host, port)] = res.Addrs
	c.lock.Unlock()
	return res.Scheme + "://" + res.Host, nil
}

// escapeSegment escapes a path segment as encodeURIComponent does, the way Matrix servers and eigen send IDs.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || strings.IndexByte("-_.!~*'()", ch) >= 0 {
			b.WriteByte(ch)
		} else {
			fmt.Fprintf(&b, "%%%02X", ch)
		}
	}
	return b.String()
}

func buildPath(prefix string, segments ...string) string {
	var b strings.Builder
	b.WriteString(prefix)
	for _, seg := range segments {
		b.WriteByte('/')
		b.WriteString(escapeSegment(seg))
	}
	return b.String()
}

// Request is one federation call, for endpoints without a method of their own.
type Request struct {
	Destination string
	Method      string
	// Path is already escaped (see the path helpers); Query is appended.
	Path  string
	Query url.Values
	// Body is marshalled as JSON; PUT and POST always carry an object ({} when nil).
	Body any
	// Unauthenticated skips the X-Matrix header (key requests).
	Unauthenticated bool
	// MaxResponseBytes bounds the answer body when it is smaller than the Client's MaxResponseBytes.
	MaxResponseBytes int64
}

// CanonicalBody is a request body that is canonical JSON already: Do sends and signs it as it is, without encoding
// or canonicalising it again.
type CanonicalBody []byte

// Do sends a request and returns the raw answer body of a 2xx answer; other answers are an *Error.
func (c *Client) Do(ctx context.Context, req *Request) ([]byte, error) {
	base, err := c.baseURL(ctx, req.Destination)
	if err != nil {
		return nil, err
	}
	var content []byte
	canonical := false
	switch body := req.Body.(type) {
	case CanonicalBody:
		content, canonical = body, true
	case nil:
		if req.Method == http.MethodPut || req.Method == http.MethodPost {
			content = []byte("{}")
		}
	default:
		if content, err = marshalJSON(req.Body); err != nil {
			return nil, fmt.Errorf("failed to encode request body: %w", err)
		}
	}
	fullURL := base + req.Path
	if len(req.Query) > 0 {
		fullURL += "?" + req.Query.Encode()
	}
	var body io.Reader
	if content != nil {
		body = bytes.NewReader(content)
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.Method, fullURL, body)
	if err != nil {
		return nil, fmt.Errorf("failed to prepare request: %w", err)
	}
	httpReq.Header.Set("User-Agent", userAgent)
	if content != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	if !req.Unauthenticated {
		// Sign exactly the request target that goes on the wire.
		auth, err := signRequest(c.Key, c.ServerName, req.Destination, req.Method, httpReq.URL.RequestURI(), content, canonical)
		if err != nil {
			return nil, err
		}
		httpReq.Header.Set("Authorization", auth)
	}
	resp, err := c.HTTP.Do(httpReq)
	if err != nil {
		return nil, fmt.Errorf("failed to send %s %s to %s: %w", req.Method, req.Path, req.Destination, err)
	}
	defer resp.Body.Close()
	limit := c.MaxResponseBytes
	if req.MaxResponseBytes > 0 && req.MaxResponseBytes < limit {
		limit = req.MaxResponseBytes
	}
	ok := resp.StatusCode >= 200 && resp.StatusCode <= 299
	if !ok {
		limit = min(limit, maxErrorAnswerBytes)
	}
	// Closing the body unread drops the connection rather than draining what the peer would still send.
	if ok && resp.ContentLength > limit {
		return nil, fmt.Errorf("answer of %s is %d bytes, larger than the limit of %d bytes", req.Destination, resp.ContentLength, limit)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("failed to read answer of %s: %w", req.Destination, err)
	} else if int64(len(data)) > limit {
		if !ok {
			return nil, parseErrorAnswer(resp.StatusCode, nil)
		}
		return nil, fmt.Errorf("answer of %s is larger than the limit of %d bytes", req.Destination, limit)
	}
	if !ok {
		return nil, parseErrorAnswer(resp.StatusCode, data)
	}
	return data, nil
}

func parseErrorAnswer(status int, data []byte) *Error {
	var fedErr Error
	if err := json.Unmarshal(data, &fedErr); err == nil && fedErr.ErrCode != "" {
		fedErr.Status = status
		return &fedErr
	}
	// eigen answers unknown routes with an Express HTML page.
	errCode := ErrCodeUnknown
	if status == http.StatusNotFound || status == http.StatusMethodNotAllowed {
		errCode = ErrCodeUnrecognized
	}
	return &Error{Status: status, ErrCode: errCode, Message: fmt.Sprintf("HTTP %d without a Matrix error body", status)}
}

func (c *Client) call(ctx context.Context, req *Request, out any) error {
	data, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err = json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("failed to decode answer of %s to %s: %w", req.Destination, req.Path, err)
	}
	return nil
}

// FetchServerKeys gets destination's raw key answer from destination itself (KeyFetcher).
func (c *Client) FetchServerKeys(ctx context.Context, destination string) ([]byte, error) {
	return c.Do(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: "/_matrix/key/v2/server",
		Unauthenticated: true, MaxResponseBytes: MaxServerKeysBytes})
}

// ServerKeys gets destination's key answer and checks its self-signatures.
func (c *Client) ServerKeys(ctx context.Context, destination string) (*ServerKeys, error) {
	raw, err := c.FetchServerKeys(ctx, destination)
	if err != nil {
		return nil, err
	}
	return ParseServerKeys(raw, destination)
}

// SendTransaction PUTs a transaction to …/send/{txnID}.
// SendCanonicalTransaction is SendTransaction for PDUs that are each canonical JSON already (as the engine stores
// them): the body is put together around them and signed without re-encoding. A PDU that is not canonical would make
// the X-Matrix signature fail at receivers that canonicalise.
func (c *Client) SendCanonicalTransaction(ctx context.Context, destination, txnID string, pdus []json.RawMessage) (*SendResponse, error) {
	size := len(`{"pdus":[]}`) + len(pdus)
	for _, p := range pdus {
		size += len(p)
	}
	body := make([]byte, 0, size)
	body = append(body, `{"pdus":[`...)
	for i, p := range pdus {
		if i > 0 {
			body = append(body, ',')
		}
		body = append(body, p...)
	}
	body = append(body, "]}"...)
	var resp SendResponse
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodPut, Path: buildPath(UnstablePrefix, "send", txnID), Body: CanonicalBody(body)}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.FailedPDUs == nil {
		resp.FailedPDUs = map[string]FailedPDU{}
	}
	return &resp, nil
}

func (c *Client) SendTransaction(ctx context.Context, destination, txnID string, txn *Transaction) (*SendResponse, error) {
	body := *txn
	if body.PDUs == nil {
		body.PDUs = []json.RawMessage{}
	}
	var resp SendResponse
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodPut, Path: buildPath(UnstablePrefix, "send", txnID), Body: &body}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.FailedPDUs == nil {
		resp.FailedPDUs = map[string]FailedPDU{}
	}
	return &resp, nil
}

// GetEvent fetches one PDU; the Matrix v1 wrapper {origin, origin_server_ts, pdus: [event]} is unwrapped too.
func (c *Client) GetEvent(ctx context.Context, destination, eventID string) (json.RawMessage, error) {
	var raw json.RawMessage
	if err := c.call(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: buildPath(UnstablePrefix, "event", eventID)}, &raw); err != nil {
		return nil, err
	}
	var wrapped struct {
		Type *string           `json:"type"`
		PDUs []json.RawMessage `json:"pdus"`
	}
	if err := json.Unmarshal(raw, &wrapped); err != nil {
		return nil, fmt.Errorf("failed to decode event answer: %w", err)
	}
	if wrapped.Type == nil && len(wrapped.PDUs) == 1 {
		return wrapped.PDUs[0], nil
	}
	return raw, nil
}

func eventQuery(eventID string) url.Values {
	if eventID == "" {
		return nil
	}
	return url.Values{"event_id": {eventID}}
}

// State fetches the state before eventID and its auth chain.
func (c *Client) State(ctx context.Context, destination, roomID, eventID string) (*StateResponse, error) {
	var resp StateResponse
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: buildPath("/_matrix/federation/v1", "state", roomID), Query: eventQuery(eventID)}, &resp)
	if err != nil {
		return nil, err
	}
	return &resp, nil
}

// StateIDs fetches the IDs of the state before eventID and of its auth chain; eigen's pdus_ids is read too.
func (c *Client) StateIDs(ctx context.Context, destination, roomID, eventID string) (*StateIDsResponse, error) {
	var resp struct {
		StateIDsResponse
		EigenPDUIDs []string `json:"pdus_ids"`
	}
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: buildPath("/_matrix/federation/v1", "state_ids", roomID), Query: eventQuery(eventID)}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.PDUIDs == nil {
		resp.PDUIDs = resp.EigenPDUIDs
	}
	return &resp.StateIDsResponse, nil
}

// Backfill fetches up to limit events ending with those in from, returned oldest first whatever order the peer
// used (eigen answers newest first).
func (c *Client) Backfill(ctx context.Context, destination, roomID string, from []string, limit int) (*BackfillResponse, error) {
	query := url.Values{"v": from, "limit": {fmt.Sprint(limit)}}
	var resp BackfillResponse
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: buildPath(UnstablePrefix, "backfill", roomID), Query: query}, &resp)
	if err != nil {
		return nil, err
	}
	if c.newestFirst(resp.PDUs, from) {
		for i, j := 0, len(resp.PDUs)-1; i < j; i, j = i+1, j-1 {
			resp.PDUs[i], resp.PDUs[j] = resp.PDUs[j], resp.PDUs[i]
		}
	}
	return &resp, nil
}

func (c *Client) newestFirst(pdus []json.RawMessage, from []string) bool {
	if len(pdus) < 2 {
		return false
	}
	first, last := pdus[0], pdus[len(pdus)-1]
	if c.EventID != nil {
		firstID, err1 := c.EventID(first)
		lastID, err2 := c.EventID(last)
		if err1 == nil && err2 == nil {
			isFrom := func(id string) bool {
				for _, f := range from {
					if f == id {
						return true
					}
				}
				return false
			}
			// Oldest first ends with the from events; newest first starts with them.
			if isFrom(firstID) != isFrom(lastID) {
				return isFrom(firstID)
			}
		}
	}
	var a, b struct {
		TS int64 `json:"origin_server_ts"`
	}
	_ = json.Unmarshal(first, &a)
	_ = json.Unmarshal(last, &b)
	return a.TS > b.TS
}

// Invite POSTs …/invite/{txnID}; the signed event is returned in both PDU and Event whichever the peer used.
func (c *Client) Invite(ctx context.Context, destination, txnID string, req *InviteRequest) (*InviteResponse, error) {
	var resp InviteResponse
	if err := c.call(ctx, &Request{Destination: destination, Method: http.MethodPost, Path: buildPath(UnstablePrefix, "invite", txnID), Body: req}, &resp); err != nil {
		return nil, err
	}
	if resp.PDU == nil {
		resp.PDU = resp.Event
	} else if resp.Event == nil {
		resp.Event = resp.PDU
	}
	if resp.PDU == nil {
		return nil, fmt.Errorf("invite answer of %s has neither pdu nor event", destination)
	}
	return &resp, nil
}

// MakeJoin asks the hub for a join template.
func (c *Client) MakeJoin(ctx context.Context, destination, roomID, userID string, versions []string) (*MakeMembershipResponse, error) {
	return c.MakeMembership(ctx, destination, "join", roomID, userID, versions)
}

// MakeLeave asks the hub for a leave template.
func (c *Client) MakeLeave(ctx context.Context, destination, roomID, userID string) (*MakeMembershipResponse, error) {
	return c.MakeMembership(ctx, destination, "leave", roomID, userID, nil)
}

// MakeKnock asks the hub for a knock template.
func (c *Client) MakeKnock(ctx context.Context, destination, roomID, userID string, versions []string) (*MakeMembershipResponse, error) {
	return c.MakeMembership(ctx, destination, "knock", roomID, userID, versions)
}

// MakeMembership calls make_{membership}. Both answer forms are read: {event, room_version} (Matrix, eigen) and
// the bare partial LPDU (the draft's make_join and make_knock), which leaves RoomVersion empty.
func (c *Client) MakeMembership(ctx context.Context, destination, membership, roomID, userID string, versions []string) (*MakeMembershipResponse, error) {
	var query url.Values
	if len(versions) > 0 {
		query = url.Values{"ver": versions}
	}
	var raw json.RawMessage
	err := c.call(ctx, &Request{Destination: destination, Method: http.MethodGet, Path: buildPath("/_matrix/federation/v1", "make_"+membership, roomID, userID), Query: query}, &raw)
	if err != nil {
		return nil, err
	}
	var resp MakeMembershipResponse
	if err = json.Unmarshal(raw, &resp); err != nil {
		return nil, fmt.Errorf("failed to decode make_%s answer: %w", membership, err)
	}
	if resp.Event == nil {
		var bare struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(raw, &bare) != nil || bare.Type == "" {
			return nil, fmt.Errorf("make_%s answer of %s holds no event", membership, destination)
		}
		resp.Event = raw
	}
	return &resp, nil
}

// SendJoin POSTs the signed join LPDU to …/send_join/{txnID}.
func (c *Client) SendJoin(ctx context.Context, destination, txnID string, event json.RawMessage) (*SendJoinResponse, error) {
	var resp SendJoinResponse
	if err := c.call(ctx, &Request{Destination: destination, Method: http.MethodPost, Path: buildPath(UnstablePrefix, "send_join", txnID), Body: event}, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// SendLeave POSTs the signed leave LPDU to …/send_leave/{txnID}.
func (c *Client) SendLeave(ctx context.Context, destination, txnID string, event json.RawMessage) error {
	return c.call(ctx, &Request{Destination: destination, Method: http.MethodPost, Path: buildPath(UnstablePrefix, "send_leave", txnID), Body: event}, nil)
}

// SendKnock POSTs the signed knock LPDU to …/send_knock/{txnID}; Matrix's knock_room_state is read as stripped_state.
func (c *Client) SendKnock(ctx context.Context, destination, txnID string, event json.RawMessage) (*SendKnockResponse, error) {
	var resp SendKnockResponse
	if err := c.call(ctx, &Request{Destination: destination, Method: http.MethodPost, Path: buildPath(UnstablePrefix, "send_knock", txnID), Body: event}, &resp); err != nil {
		return nil, err
	}
	if resp.StrippedState == nil {
		resp.StrippedState = resp.KnockRoomState
	}
	return &resp, nil
}

var _ KeyFetcher = (*Client)(nil)
