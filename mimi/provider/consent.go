package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

const (
	upsertConsentQuery = `
		INSERT INTO mimi_consent (target_uri, requester_uri, room_uri, granted, updated_at) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (target_uri, requester_uri, room_uri) DO UPDATE SET granted=excluded.granted, updated_at=excluded.updated_at
	`
	// The decision for the room wins over the one for every room.
	getConsentQuery = `
		SELECT granted, room_uri FROM mimi_consent WHERE target_uri=$1 AND requester_uri=$2 AND room_uri IN ($3, '')
		ORDER BY room_uri DESC LIMIT 1
	`
	anyConsentQuery        = `SELECT COUNT(*) FROM mimi_consent WHERE target_uri=$1 AND requester_uri=$2 AND granted`
	insertConsentReqQuery  = `INSERT INTO mimi_consent_request (target_uri, requester_uri, room_uri, requested_at) VALUES ($1, $2, $3, $4) ON CONFLICT (target_uri, requester_uri, room_uri) DO NOTHING`
	deleteConsentReqQuery  = `DELETE FROM mimi_consent_request WHERE target_uri=$1 AND requester_uri=$2 AND room_uri=$3`
	listConsentReqQuery    = `SELECT requester_uri, room_uri, requested_at FROM mimi_consent_request WHERE target_uri=$1 ORDER BY requested_at, requester_uri, room_uri`
	userExistsQuery        = `SELECT COUNT(*) FROM mimi_client WHERE user_uri=$1`
	consentEventKindPrefix = "consent_"
)

// Consent is a consent operation between two users (draft §"Consent"): Requester asks to add Target, Target grants
// or revokes that; Room empty means every room.
type Consent struct {
	Operation         protocol.ConsentOperation
	Requester, Target string
	Room              string
	Time              time.Time
}

// ConsentCallbacks is what Callbacks may also implement to hear consent operations from other providers: a request
// (or its cancel) for a local user, a grant or revoke for a local requester. Like the others it is called again
// until it returns nil; without it the operations are only stored.
type ConsentCallbacks interface {
	OnConsent(ctx context.Context, c Consent) error
}

var consentKinds = map[protocol.ConsentOperation]string{
	protocol.ConsentCancel: "consent_cancel", protocol.ConsentRequest: "consent_request",
	protocol.ConsentGrant: "consent_grant", protocol.ConsentRevoke: "consent_revoke",
}

// consentEvent turns a stored consent event back into a Consent: user is the local user, remote the other.
func consentEvent(kind, room, user string, remote []byte, t time.Time) (Consent, bool) {
	for op, k := range consentKinds {
		if k == kind {
			c := Consent{Operation: op, Room: room, Time: t, Requester: string(remote), Target: user}
			if op == protocol.ConsentGrant || op == protocol.ConsentRevoke {
				c.Requester, c.Target = user, string(remote)
			}
			return c, true
		}
	}
	return Consent{}, false
}

// RequestConsent asks target's provider for target's consent to requester (a local user) adding it, to room or to
// every room when room is empty; CancelConsentRequest withdraws that.
func (p *Provider) RequestConsent(ctx context.Context, requester, target, room string) error {
	return p.sendConsent(ctx, protocol.ConsentRequest, requester, target, room)
}

// CancelConsentRequest cancels a request made with the same requester, target and room.
func (p *Provider) CancelConsentRequest(ctx context.Context, requester, target, room string) error {
	return p.sendConsent(ctx, protocol.ConsentCancel, requester, target, room)
}

// GrantConsent records that target (a local user) lets requester add it to room (every room when empty), which
// keyMaterial then honours when Config.RequireConsent is set, and tells requester's provider.
func (p *Provider) GrantConsent(ctx context.Context, target, requester, room string) error {
	return p.decideConsent(ctx, protocol.ConsentGrant, target, requester, room)
}

// RevokeConsent records that target no longer lets (or never lets) requester add it, and tells requester's provider.
func (p *Provider) RevokeConsent(ctx context.Context, target, requester, room string) error {
	return p.decideConsent(ctx, protocol.ConsentRevoke, target, requester, room)
}

func (p *Provider) decideConsent(ctx context.Context, op protocol.ConsentOperation, target, requester, room string) error {
	if d, err := ParseUser(target); err != nil || d != p.domain {
		return fmt.Errorf("deciding consent: %w: %s is not a local user", ErrUnknownUser, target)
	}
	err := p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		if _, err := p.db.Exec(ctx, upsertConsentQuery, target, requester, room, op == protocol.ConsentGrant, time.Now().UnixMilli()); err != nil {
			return err
		}
		_, err := p.db.Exec(ctx, deleteConsentReqQuery, target, requester, room)
		return err
	})
	if err != nil {
		return fmt.Errorf("storing consent of %s for %s: %w", target, requester, err)
	}
	if d, _ := ParseUser(requester); d == p.domain {
		return nil
	}
	return p.sendConsent(ctx, op, requester, target, room)
}

// sendConsent posts a ConsentEntry to the other user's provider: requests and cancels to the target's, grants and
// revokes to the requester's.
func (p *Provider) sendConsent(ctx context.Context, op protocol.ConsentOperation, requester, target, room string) error {
	local, remote, endpoint := requester, target, func(d *protocol.Directory) string { return d.RequestConsent }
	if op == protocol.ConsentGrant || op == protocol.ConsentRevoke {
		local, remote, endpoint = target, requester, func(d *protocol.Directory) string { return d.UpdateConsent }
	}
	if d, err := ParseUser(local); err != nil || d != p.domain {
		return fmt.Errorf("sending consent: %w: %s is not a local user", ErrUnknownUser, local)
	}
	remoteDomain, err := ParseUser(remote)
	if err != nil {
		return err
	}
	if room != "" {
		if _, err := ParseRoom(room); err != nil {
			return err
		}
	}
	body, err := (&protocol.ConsentEntry{Operation: op, RequesterURI: requester, TargetURI: target, RoomID: room}).Encode()
	if err != nil {
		return err
	}
	dir, err := p.peers.directory(ctx, remoteDomain)
	if err != nil {
		return err
	}
	if endpoint(dir) == "" {
		return fmt.Errorf("sending consent: %w: %s publishes no consent endpoint", ErrUnreachable, remoteDomain)
	}
	status, resp, _, err := p.peers.post(ctx, remoteDomain, endpoint, map[string]string{"targetDomain": remoteDomain, "requesterDomain": remoteDomain}, body)
	if err != nil {
		return fmt.Errorf("sending consent %s: %w", consentKinds[op], err)
	}
	if status != http.StatusCreated {
		return peerError("consent", status, resp)
	}
	return nil
}

// receiveConsent handles POST /requestConsent/{targetDomain} and POST /updateConsent/{requesterDomain}: the local user
// of the entry must be this provider's (404 if unknown), the other the sending provider's.
func (p *Provider) receiveConsent(ctx context.Context, from, pathDomain string, update bool, body []byte) error {
	c, err := protocol.DecodeConsentEntry(body)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if pathDomain != p.domain {
		return fmt.Errorf("%w: consent for %s sent to %s", ErrBadRequest, pathDomain, p.domain)
	}
	isUpdate := c.Operation == protocol.ConsentGrant || c.Operation == protocol.ConsentRevoke
	if isUpdate != update {
		return fmt.Errorf("%w: consent operation %d on the wrong endpoint", ErrBadRequest, c.Operation)
	}
	local, remote := c.TargetURI, c.RequesterURI
	if update {
		local, remote = c.RequesterURI, c.TargetURI
	}
	ld, err := ParseUser(local)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	rd, err := ParseUser(remote)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if c.RoomID != "" {
		if _, err := ParseRoom(c.RoomID); err != nil {
			return fmt.Errorf("%w: %w", ErrBadRequest, err)
		}
	}
	if ld != p.domain {
		return fmt.Errorf("%w: %s is not a user of %s", ErrBadRequest, local, p.domain)
	}
	if rd != from {
		return &httpError{http.StatusForbidden, fmt.Errorf("%w: %s may not speak for %s", ErrPeerAuth, from, remote)}
	}
	var n int
	if err := p.db.QueryRow(ctx, userExistsQuery, local).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		return &httpError{http.StatusNotFound, fmt.Errorf("%w: %s", ErrUnknownUser, local)}
	}
	err = p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		switch c.Operation {
		case protocol.ConsentRequest:
			if _, err := p.db.Exec(ctx, insertConsentReqQuery, local, remote, c.RoomID, time.Now().UnixMilli()); err != nil {
				return err
			}
		case protocol.ConsentCancel:
			if _, err := p.db.Exec(ctx, deleteConsentReqQuery, local, remote, c.RoomID); err != nil {
				return err
			}
		default:
			if _, err := p.db.Exec(ctx, upsertConsentQuery, remote, local, c.RoomID, c.Operation == protocol.ConsentGrant, time.Now().UnixMilli()); err != nil {
				return err
			}
		}
		return p.queueEvent(ctx, c.RoomID, MembershipKind(consentKinds[c.Operation]), local, []byte(remote), nowMillis())
	})
	if err != nil {
		return fmt.Errorf("storing consent %s: %w", consentKinds[c.Operation], err)
	}
	p.kickInbox()
	return nil
}

// ConsentRequests lists the pending requests of other providers' users for a local user's consent.
func (p *Provider) ConsentRequests(ctx context.Context, target string) ([]Consent, error) {
	rows, err := p.db.Query(ctx, listConsentReqQuery, target)
	if err != nil {
		return nil, fmt.Errorf("listing consent requests of %s: %w", target, err)
	}
	defer rows.Close()
	var out []Consent
	for rows.Next() {
		c := Consent{Operation: protocol.ConsentRequest, Target: target}
		var t int64
		if err := rows.Scan(&c.Requester, &c.Room, &t); err != nil {
			return nil, err
		}
		c.Time = time.UnixMilli(t)
		out = append(out, c)
	}
	return out, rows.Err()
}

// HasConsent says whether target lets requester add it to room, as far as this provider knows: its own user's
// decision, or what target's provider told it.
func (p *Provider) HasConsent(ctx context.Context, requester, target, room string) (bool, error) {
	var granted bool
	var r string
	err := p.db.QueryRow(ctx, getConsentQuery, target, requester, room).Scan(&granted, &r)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading consent of %s for %s: %w", target, requester, err)
	}
	return granted, nil
}

// consentStatus is the keyMaterial answer for a local target and another provider's requester when consent is
// required: success, noConsentForThisRoom when target granted it for other rooms only, noConsent otherwise.
func (p *Provider) consentStatus(ctx context.Context, requester, target, room string) (protocol.KeyMaterialUserCode, error) {
	ok, err := p.HasConsent(ctx, requester, target, room)
	if err != nil || ok {
		return protocol.UserSuccess, err
	}
	var n int
	if err := p.db.QueryRow(ctx, anyConsentQuery, target, requester).Scan(&n); err != nil {
		return 0, err
	}
	if n > 0 {
		return protocol.UserNoConsentForThisRoom, nil
	}
	return protocol.UserNoConsent, nil
}

// isConsentKind says whether an inbox event is a consent operation.
func isConsentKind(kind string) bool { return strings.HasPrefix(kind, consentEventKindPrefix) }
