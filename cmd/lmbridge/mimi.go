package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"

	"go.mau.fi/util/dbutil"

	"github.com/lmbridge/lmbridge/bridge"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/media"
	"github.com/lmbridge/lmbridge/mimi/provider"
	"github.com/lmbridge/lmbridge/mimi/rooms"
	"github.com/lmbridge/lmbridge/remote"
)

// newMIMI opens the MIMI side when the config has a mimi section (nil otherwise). It is made before the bridge, which
// needs its domain, and started after it, once the bridge is its listener.
func newMIMI(ctx context.Context, cfg *config.Config, db *dbutil.Database, files *media.Mapper, users *bridge.UserMapper) (*rooms.Rooms, error) {
	if !cfg.MIMI.Enabled() {
		return nil, nil
	}
	m := cfg.MIMI
	tlsCfg, err := provider.LoadTLS(m.TLSCert, m.TLSKey, m.TLSCA)
	if err != nil {
		return nil, err
	}
	pc := provider.Config{Domain: m.Domain, Listen: m.Listen, PublicURL: m.PublicURL, TLS: tlsCfg, DB: db}
	if len(m.Peers) > 0 {
		peers := m.Peers
		pc.Locate = func(domain string) string {
			if addr, ok := peers[domain]; ok {
				_, port, _ := net.SplitHostPort(addr)
				return "https://" + domain + ":" + port
			}
			return "https://" + domain
		}
		pc.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if to, ok := peers[host]; ok {
				if _, toPort, _ := net.SplitHostPort(to); toPort == port {
					addr = to
				}
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		}
	}
	homeserver := cfg.Homeserver.Domain
	r, err := rooms.New(ctx, rooms.Config{Provider: pc, Media: &mimiMedia{files: files, users: users}, IsLocalUser: func(u remote.UserID) bool {
		// @<encoded Matrix ID>:<our domain>, for a user of our homeserver.
		name, domain, ok := strings.Cut(strings.TrimPrefix(string(u), "@"), ":")
		if !ok || domain != m.Domain {
			return false
		}
		_, server, err := bridge.DecodeUserID(name)
		return err == nil && server == homeserver
	}})
	if err != nil {
		return nil, fmt.Errorf("failed to set up the MIMI provider: %w", err)
	}
	return r, nil
}

// mimiMedia is the media package's Mapper as mimi/rooms uses it: MIMI users' files are uploaded as their ghosts, and
// the Mapper's refusals are the MIMI side's.
type mimiMedia struct {
	files *media.Mapper
	users *bridge.UserMapper
}

var _ rooms.Media = (*mimiMedia)(nil)

func (m *mimiMedia) Download(ctx context.Context, uri string) ([]byte, string, error) {
	data, mimetype, err := m.files.Download(ctx, uri)
	return data, mimetype, refusal(err)
}

func (m *mimiMedia) Upload(ctx context.Context, uploader remote.UserID, data []byte, mimetype, filename string) (string, error) {
	ghost, err := m.users.GhostOf(string(uploader))
	if err != nil {
		return "", fmt.Errorf("%w: %w", rooms.ErrMediaRefused, err)
	}
	uri, err := m.files.Upload(ctx, ghost, data, mimetype, filename)
	return uri, refusal(err)
}

func (m *mimiMedia) MaxBytes() int64 { return m.files.MaxBytes() }

// refusal marks the media package's refusals (for good) as the MIMI side's.
func refusal(err error) error {
	if err != nil && errors.Is(err, bridge.ErrMediaRefused) {
		return fmt.Errorf("%w: %w", rooms.ErrMediaRefused, err)
	}
	return err
}
