package provider

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/lmbridge/lmbridge/mls/group"
)

const (
	getProviderKeyQuery    = `SELECT sig_priv, sig_pub FROM mimi_provider_key WHERE name=$1`
	insertProviderKeyQuery = `INSERT INTO mimi_provider_key (name, sig_priv, sig_pub) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING`

	insertClientQuery  = `INSERT INTO mimi_client (client_uri, user_uri, sig_priv, sig_pub) VALUES ($1, $2, $3, $4)`
	getClientQuery     = `SELECT user_uri, sig_priv, sig_pub FROM mimi_client WHERE client_uri=$1`
	clientsOfUserQuery = `SELECT client_uri FROM mimi_client WHERE user_uri=$1 ORDER BY client_uri`
	insertKeyPkgQuery  = `INSERT INTO mimi_key_package (ref, client_uri, key_package, private) VALUES ($1, $2, $3, $4)`
	claimKeyPkgQuery   = `
		UPDATE mimi_key_package SET claimed=true WHERE ref=(
			SELECT ref FROM mimi_key_package WHERE client_uri=$1 AND NOT claimed ORDER BY ref LIMIT 1
		) RETURNING key_package
	`
	getKeyPkgQuery    = `SELECT client_uri, key_package, private FROM mimi_key_package WHERE ref=$1`
	deleteKeyPkgQuery = `DELETE FROM mimi_key_package WHERE ref=$1`
	countKeyPkgQuery  = `SELECT COUNT(*) FROM mimi_key_package WHERE client_uri=$1 AND NOT claimed`
	saveGroupQuery    = `
		INSERT INTO mimi_client_group (room_uri, client_uri, epoch, state) VALUES ($1, $2, $3, $4)
		ON CONFLICT (room_uri, client_uri) DO UPDATE SET epoch=excluded.epoch, state=excluded.state
	`
	loadGroupQuery   = `SELECT state FROM mimi_client_group WHERE room_uri=$1 AND client_uri=$2`
	deleteGroupQuery = `DELETE FROM mimi_client_group WHERE room_uri=$1 AND client_uri=$2`
	roomClientsQuery = `SELECT client_uri FROM mimi_client_group WHERE room_uri=$1 ORDER BY client_uri`
	roomsQuery       = `SELECT DISTINCT room_uri FROM mimi_client_group`

	insertHubRoomQuery = `
		INSERT INTO mimi_hub_room (room_uri, initial_info, initial_tree, group_info, epoch, created_at) VALUES ($1, $2, $3, $2, $4, $5)
	`
	getHubRoomQuery    = `SELECT initial_info, initial_tree, group_info FROM mimi_hub_room WHERE room_uri=$1`
	updateHubRoomQuery = `UPDATE mimi_hub_room SET epoch=$2, group_info=$3 WHERE room_uri=$1`
	insertHubLogQuery  = `INSERT INTO mimi_hub_log (room_uri, seq, epoch, message, accepted_at) VALUES ($1, $2, $3, $4, $5)`
	hubLogQuery        = `SELECT seq, message FROM mimi_hub_log WHERE room_uri=$1 ORDER BY seq`

	insertOutboxQuery = `INSERT INTO mimi_outbox (destination, room_uri, fanout, created_at) VALUES ($1, $2, $3, $4) RETURNING seq`
	outboxDestsQuery  = `SELECT DISTINCT destination FROM mimi_outbox`
	outboxHeadQuery   = `SELECT seq, room_uri, fanout FROM mimi_outbox WHERE destination=$1 ORDER BY seq LIMIT $2`
	deleteOutboxQuery = `DELETE FROM mimi_outbox WHERE destination=$1 AND seq<=$2 AND room_uri=$3`
	outboxCountQuery  = `SELECT destination, COUNT(*), MIN(created_at) FROM mimi_outbox GROUP BY destination`

	// The digests only need to outlive the hub's retries; MLS refuses a message replayed later anyway (its epoch or
	// its key generation is gone).
	pruneReceivedQuery  = `DELETE FROM mimi_received WHERE received_at<$1`
	insertReceivedQuery = `INSERT INTO mimi_received (hub, digest, received_at) VALUES ($1, $2, $3) ON CONFLICT (hub, digest) DO NOTHING`

	insertInboxQuery = `INSERT INTO mimi_inbox (room_uri, kind, user_uri, payload, hub_time) VALUES ($1, $2, $3, $4, $5)`
	inboxHeadQuery   = `SELECT seq, room_uri, kind, user_uri, payload, hub_time FROM mimi_inbox ORDER BY seq LIMIT $1`
	deleteInboxQuery = `DELETE FROM mimi_inbox WHERE seq<=$1`
)

// groupStore is the group.Store of one local client, in mimi_client_group (within the caller's transaction, when
// ctx carries one).
type groupStore struct {
	p      *Provider
	client string
}

func (s groupStore) SaveGroup(ctx context.Context, groupID []byte, epoch uint64, state []byte) error {
	_, err := s.p.db.Exec(ctx, saveGroupQuery, string(groupID), s.client, int64(epoch), state)
	return err
}

func (s groupStore) LoadGroup(ctx context.Context, groupID []byte) ([]byte, error) {
	var state []byte
	err := s.p.db.QueryRow(ctx, loadGroupQuery, string(groupID), s.client).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, group.ErrNoState
	}
	return state, err
}

// loadGroup reads a local client's group in a room.
func (p *Provider) loadGroup(ctx context.Context, room, client string) (*group.Group, error) {
	g, err := group.Load(ctx, groupStore{p, client}, []byte(room), p.groupConfig())
	if errors.Is(err, group.ErrNoState) {
		return nil, fmt.Errorf("%w: %s has no group in %s", ErrNotInRoom, client, room)
	}
	return g, err
}

func (p *Provider) saveGroup(ctx context.Context, client string, g *group.Group) error {
	if err := g.Save(ctx, groupStore{p, client}); err != nil {
		return fmt.Errorf("saving group of %s: %w", client, err)
	}
	return nil
}

// roomClients lists the local clients with a group in a room.
func (p *Provider) roomClients(ctx context.Context, room string) ([]string, error) {
	rows, err := p.db.Query(ctx, roomClientsQuery, room)
	if err != nil {
		return nil, fmt.Errorf("listing clients of %s: %w", room, err)
	}
	return scanStrings(rows)
}

type rowsScanner interface {
	Next() bool
	Scan(...any) error
	Close() error
	Err() error
}

func scanStrings(rows rowsScanner) ([]string, error) {
	defer rows.Close()
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}
