package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/rs/zerolog"

	"github.com/lmbridge/lmbridge/mimi/protocol"
	"github.com/lmbridge/lmbridge/mls/codec"
	"github.com/lmbridge/lmbridge/mls/wire"
)

// fetchKeyMaterial gets one KeyPackage per client of target: from this provider's store, from target's provider
// (when this provider hubs the room) or through the room's hub (as the draft routes it).
func (p *Provider) fetchKeyMaterial(ctx context.Context, room, requester, requesterClient, target string) ([]*wire.KeyPackage, error) {
	targetDomain, err := ParseUser(target)
	if err != nil {
		return nil, err
	}
	hubDomain, err := ParseRoom(room)
	if err != nil {
		return nil, err
	}
	id, _, err := p.identity(ctx, requesterClient)
	if err != nil {
		return nil, err
	}
	req := &protocol.KeyMaterialRequest{RequestingUser: requester, TargetUser: target, RoomID: room,
		AcceptableCiphersuites: []uint16{uint16(p.suite.ID())}, RequesterSignatureKey: id.SigPub, RequesterCredential: id.Credential}
	if err := req.Sign(p.suite, id.SigPriv); err != nil {
		return nil, err
	}
	var resp *protocol.KeyMaterialResponse
	switch {
	case targetDomain == p.domain:
		if resp, err = p.claimKeyMaterial(ctx, target); err != nil {
			return nil, err
		}
	case hubDomain == p.domain:
		resp, err = p.postKeyMaterial(ctx, targetDomain, req)
	default:
		resp, err = p.postKeyMaterial(ctx, hubDomain, req)
	}
	if err != nil {
		return nil, err
	}
	switch resp.UserStatus {
	case protocol.UserSuccess, protocol.UserPartialSuccess:
	case protocol.UserUnknown, protocol.UserDeleted:
		return nil, fmt.Errorf("%w: %s (key material status %d)", ErrUnknownUser, target, resp.UserStatus)
	case protocol.UserNoConsent, protocol.UserNoConsentForThisRoom:
		return nil, fmt.Errorf("%w: %s has not consented", ErrNotAllowed, target)
	default:
		return nil, fmt.Errorf("%w: %s (key material status %d)", ErrNoKeyMaterial, target, resp.UserStatus)
	}
	var out []*wire.KeyPackage
	for _, c := range resp.Clients {
		if c.Status != protocol.ClientSuccess {
			continue
		}
		// A provider answers for its own users' clients only.
		if _, user, err := clientOfLeaf(&c.KeyPackage.LeafNode); err != nil || user != target || c.KeyPackage.CipherSuite != p.suite.ID() {
			return nil, fmt.Errorf("%w: key package for %s is not %s's", ErrNoKeyMaterial, c.ClientURI, target)
		}
		out = append(out, c.KeyPackage)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoKeyMaterial, target)
	}
	return out, nil
}

func (p *Provider) postKeyMaterial(ctx context.Context, domain string, req *protocol.KeyMaterialRequest) (*protocol.KeyMaterialResponse, error) {
	body, err := req.Encode()
	if err != nil {
		return nil, err
	}
	status, b, _, err := p.peers.post(ctx, domain, func(d *protocol.Directory) string { return d.KeyMaterial }, map[string]string{"targetUser": req.TargetUser}, body)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, peerError("keyMaterial", status, b)
	}
	resp, err := protocol.DecodeKeyMaterialResponse(b)
	if err != nil {
		return nil, fmt.Errorf("%w: keyMaterial response: %w", ErrUnreachable, err)
	}
	return resp, nil
}

// claimKeyMaterial hands out one unclaimed KeyPackage of each of a local user's clients and publishes fresh ones.
func (p *Provider) claimKeyMaterial(ctx context.Context, user string) (*protocol.KeyMaterialResponse, error) {
	resp := &protocol.KeyMaterialResponse{UserURI: user}
	if p.cfg.UnknownUser != nil {
		clients, err := p.clientsOf(ctx, user)
		if err != nil {
			return nil, err
		}
		if len(clients) == 0 {
			if err := p.cfg.UnknownUser(ctx, user); err != nil {
				zerolog.Ctx(ctx).Debug().Err(err).Str("user", user).Msg("Key material asked for a user the application does not know")
				resp.UserStatus = protocol.UserUnknown
				return resp, nil
			}
		}
	}
	err := p.db.DoTxn(ctx, nil, func(ctx context.Context) error {
		resp.Clients = nil
		clients, err := p.clientsOf(ctx, user)
		if err != nil {
			return err
		}
		for _, c := range clients {
			var kpb []byte
			err := p.db.QueryRow(ctx, claimKeyPkgQuery, c).Scan(&kpb)
			if errors.Is(err, sql.ErrNoRows) {
				resp.Clients = append(resp.Clients, protocol.ClientKeyMaterial{Status: protocol.ClientKeyMaterialExhausted, ClientURI: c})
				continue
			} else if err != nil {
				return fmt.Errorf("claiming key package of %s: %w", c, err)
			}
			kp := new(wire.KeyPackage)
			if err := codec.Unmarshal(kpb, kp); err != nil {
				return fmt.Errorf("decoding stored key package: %w", err)
			}
			resp.Clients = append(resp.Clients, protocol.ClientKeyMaterial{Status: protocol.ClientSuccess, ClientURI: c, KeyPackage: kp})
			if err := p.refillKeyPackages(ctx, c); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ok := slices.IndexFunc(resp.Clients, func(c protocol.ClientKeyMaterial) bool { return c.Status == protocol.ClientSuccess }) >= 0
	all := !slices.ContainsFunc(resp.Clients, func(c protocol.ClientKeyMaterial) bool { return c.Status != protocol.ClientSuccess })
	switch {
	case len(resp.Clients) == 0:
		resp.UserStatus = protocol.UserUnknown
	case all:
		resp.UserStatus = protocol.UserSuccess
	case ok:
		resp.UserStatus = protocol.UserPartialSuccess
	default:
		resp.UserStatus = protocol.UserNoCompatibleMaterial
	}
	return resp, nil
}

// serveKeyMaterial answers POST /keyMaterial/{targetUser}: for a local user from the store; as the room's hub for
// another provider's user, by asking that provider.
func (p *Provider) serveKeyMaterial(ctx context.Context, from, target string, body []byte) (*protocol.KeyMaterialResponse, error) {
	req, err := protocol.DecodeKeyMaterialRequest(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if req.TargetUser != target {
		return nil, fmt.Errorf("%w: body names %s, path %s", ErrBadRequest, req.TargetUser, target)
	}
	if err := req.Verify(p.suite); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if !slices.Contains(req.AcceptableCiphersuites, uint16(p.suite.ID())) {
		return &protocol.KeyMaterialResponse{UserStatus: protocol.UserIncompatibleProtocol, UserURI: target}, nil
	}
	reqDomain, err := ParseUser(req.RequestingUser)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	hubDomain, err := ParseRoom(req.RoomID)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if from != reqDomain && from != hubDomain {
		return nil, &httpError{http.StatusForbidden, fmt.Errorf("%w: %s may not ask for %s", ErrPeerAuth, from, req.RequestingUser)}
	}
	targetDomain, err := ParseUser(target)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if hubDomain == p.domain {
		// The hub hands out key material for its rooms only to those the room's policy lets add participants.
		if err := p.hub.mayAdd(ctx, req.RoomID, req.RequestingUser); err != nil {
			return nil, err
		}
	}
	switch {
	case targetDomain == p.domain:
		if p.cfg.RequireConsent && reqDomain != p.domain {
			if code, err := p.consentStatus(ctx, req.RequestingUser, target, req.RoomID); err != nil {
				return nil, err
			} else if code != protocol.UserSuccess {
				return &protocol.KeyMaterialResponse{UserStatus: code, UserURI: target}, nil
			}
		}
		return p.claimKeyMaterial(ctx, target)
	case hubDomain == p.domain && from == reqDomain:
		// The requester is in a room hubbed here: ask the target's provider on its behalf.
		return p.postKeyMaterial(ctx, targetDomain, req)
	}
	return &protocol.KeyMaterialResponse{UserStatus: protocol.UserUnknown, UserURI: target}, nil
}
