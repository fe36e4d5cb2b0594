package provider

import (
	"context"
	"fmt"
	"net/http"
	"strings"

	"github.com/lmbridge/lmbridge/mimi/protocol"
)

const usersQuery = `SELECT DISTINCT user_uri FROM mimi_client WHERE user_uri=$1`

// LookupUser asks domain's provider for the URI of the user with a handle: "im:name@domain" (the draft's handle
// search) or a bare name (its nick search). It returns ErrUnknownUser when nobody matches (or the user does not
// want to be found), ErrNotAllowed when the provider refuses the query.
func (p *Provider) LookupUser(ctx context.Context, domain, handle string) (string, error) {
	q := protocol.QueryElement{Type: protocol.SearchNick, Value: handle}
	if strings.HasPrefix(handle, "im:") {
		q.Type = protocol.SearchHandle
	}
	body, err := (&protocol.IdentifierRequest{Elements: []protocol.QueryElement{q}}).Encode()
	if err != nil {
		return "", err
	}
	var resp *protocol.IdentifierResponse
	if domain == p.domain {
		if resp, err = p.identifierQuery(ctx, domain, body); err != nil {
			return "", err
		}
	} else {
		dir, err := p.peers.directory(ctx, domain)
		if err != nil {
			return "", err
		}
		if dir.IdentifierQuery == "" {
			return "", fmt.Errorf("looking up %s: %w: %s publishes no identifierQuery endpoint", handle, ErrUnreachable, domain)
		}
		status, b, _, err := p.peers.post(ctx, domain, func(d *protocol.Directory) string { return d.IdentifierQuery }, map[string]string{"domain": domain}, body)
		if err != nil {
			return "", fmt.Errorf("looking up %s: %w", handle, err)
		}
		if status != http.StatusOK {
			return "", peerError("identifierQuery", status, b)
		}
		if resp, err = protocol.DecodeIdentifierResponse(b); err != nil {
			return "", fmt.Errorf("looking up %s: %w: %w", handle, ErrUnreachable, err)
		}
	}
	switch resp.Code {
	case protocol.IdentifierSuccess:
	case protocol.IdentifierNotFound:
		return "", fmt.Errorf("looking up %s at %s: %w", handle, domain, ErrUnknownUser)
	default:
		return "", fmt.Errorf("looking up %s at %s: %w (identifier query code %d)", handle, domain, ErrNotAllowed, resp.Code)
	}
	if len(resp.URIs) != 1 {
		return "", fmt.Errorf("looking up %s at %s: %w: %d matches", handle, domain, ErrNotAllowed, len(resp.URIs))
	}
	if d, err := ParseUser(resp.URIs[0]); err != nil || d != domain {
		return "", fmt.Errorf("looking up %s: %w: %s answered %q", handle, ErrUnreachable, domain, resp.URIs[0])
	}
	return resp.URIs[0], nil
}

// identifierQuery answers POST /identifierQuery/{domain}. Users are found by their exact handle (im:name@domain) or
// nick (name), and only if Config.Findable lets them be; every other search type is unsupportedField.
func (p *Provider) identifierQuery(ctx context.Context, domain string, body []byte) (*protocol.IdentifierResponse, error) {
	req, err := protocol.DecodeIdentifierRequest(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadRequest, err)
	}
	if domain != p.domain {
		return nil, fmt.Errorf("%w: identifier query for %s sent to %s", ErrBadRequest, domain, p.domain)
	}
	name := ""
	for _, e := range req.Elements {
		var n string
		switch e.Type {
		case protocol.SearchHandle:
			user, host, ok := strings.Cut(strings.TrimPrefix(e.Value, "im:"), "@")
			if !ok || !strings.HasPrefix(e.Value, "im:") || host != p.domain {
				return &protocol.IdentifierResponse{Code: protocol.IdentifierNotFound}, nil
			}
			n = user
		case protocol.SearchNick:
			n = e.Value
		default:
			return &protocol.IdentifierResponse{Code: protocol.IdentifierUnsupportedField}, nil
		}
		// Every element must match the same user.
		if name != "" && n != name || n == "" || strings.ContainsAny(n, "/") {
			return &protocol.IdentifierResponse{Code: protocol.IdentifierNotFound}, nil
		}
		name = n
	}
	user := UserURI(p.domain, name)
	uris, err := p.db.Query(ctx, usersQuery, user)
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", user, err)
	}
	found, err := scanStrings(uris)
	if err != nil {
		return nil, fmt.Errorf("looking up %s: %w", user, err)
	}
	if len(found) == 0 || p.cfg.Findable != nil && !p.cfg.Findable(ctx, user) {
		return &protocol.IdentifierResponse{Code: protocol.IdentifierNotFound}, nil
	}
	return &protocol.IdentifierResponse{Code: protocol.IdentifierSuccess, URIs: found}, nil
}
