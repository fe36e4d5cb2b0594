package provider

import (
	"fmt"
	"strings"

	"github.com/lmbridge/lmbridge/mls/wire"
)

const scheme = "mimi://"

// UserURI is the URI of user name on domain.
func UserURI(domain, name string) string { return scheme + domain + "/u/" + name }

// ClientURI is the URI of a client (device) of a user.
func ClientURI(domain, name, device string) string {
	return scheme + domain + "/d/" + name + "/" + device
}

// ProviderURI is the URI of a provider itself: the credential of a hub as the room's external sender.
func ProviderURI(domain string) string { return scheme + domain }

// RoomURI is the URI of a room hubbed by domain.
func RoomURI(domain, name string) string { return scheme + domain + "/r/" + name }

// splitURI returns the domain, kind and remaining path segments of a MIMI URI.
func splitURI(uri string) (domain, kind string, rest []string, err error) {
	body, ok := strings.CutPrefix(uri, scheme)
	if !ok {
		return "", "", nil, fmt.Errorf("%w: %q", ErrBadURI, uri)
	}
	parts := strings.Split(body, "/")
	if len(parts) < 3 || parts[0] == "" {
		return "", "", nil, fmt.Errorf("%w: %q", ErrBadURI, uri)
	}
	for _, p := range parts {
		if p == "" {
			return "", "", nil, fmt.Errorf("%w: empty segment in %q", ErrBadURI, uri)
		}
	}
	return parts[0], parts[1], parts[2:], nil
}

// DomainOf is the provider domain of a user, client or room URI.
func DomainOf(uri string) (string, error) {
	d, _, _, err := splitURI(uri)
	return d, err
}

// ParseUser checks a user URI and returns its domain.
func ParseUser(uri string) (domain string, err error) {
	d, kind, rest, err := splitURI(uri)
	if err != nil {
		return "", err
	}
	if kind != "u" || len(rest) != 1 {
		return "", fmt.Errorf("%w: not a user URI: %q", ErrBadURI, uri)
	}
	return d, nil
}

// UserOfClient is the user URI a client URI belongs to.
func UserOfClient(client string) (string, error) {
	d, kind, rest, err := splitURI(client)
	if err != nil {
		return "", err
	}
	if kind != "d" || len(rest) != 2 {
		return "", fmt.Errorf("%w: not a client URI: %q", ErrBadURI, client)
	}
	return UserURI(d, rest[0]), nil
}

// ParseRoom checks a room URI and returns its hub's domain.
func ParseRoom(uri string) (hub string, err error) {
	d, kind, rest, err := splitURI(uri)
	if err != nil {
		return "", err
	}
	if kind != "r" || len(rest) != 1 {
		return "", fmt.Errorf("%w: not a room URI: %q", ErrBadURI, uri)
	}
	return d, nil
}

// clientOfLeaf is the client URI in a leaf's basic credential.
func clientOfLeaf(ln *wire.LeafNode) (client, user string, err error) {
	if ln == nil {
		return "", "", fmt.Errorf("%w: no such leaf", ErrUnknownUser)
	}
	if ln.Credential.Type != wire.CredentialBasic {
		return "", "", fmt.Errorf("%w: credential type %d", ErrBadURI, ln.Credential.Type)
	}
	client = string(ln.Credential.Identity)
	user, err = UserOfClient(client)
	return client, user, err
}

// credentialAuth is the AuthService of every group this package handles: a basic credential naming a MIMI client,
// or, for the hub as the room's external sender, a provider. Which provider may speak for a client is checked per
// request (its domain against the TLS peer).
type credentialAuth struct{}

func (credentialAuth) ValidateCredential(cred *wire.Credential, _ []byte) error {
	if cred.Type != wire.CredentialBasic {
		return fmt.Errorf("%w: credential type %d", ErrBadURI, cred.Type)
	}
	identity := string(cred.Identity)
	if domain, ok := strings.CutPrefix(identity, scheme); ok && domain != "" && !strings.Contains(domain, "/") {
		return nil
	}
	_, err := UserOfClient(identity)
	return err
}
