package bridgedb

import (
	"context"
	"fmt"

	"go.mau.fi/util/dbutil"
)

const (
	getGhostQuery = `SELECT displayname, avatar_url FROM bridge_ghost WHERE lm_user_id=$1`
	putGhostQuery = `INSERT INTO bridge_ghost (lm_user_id, displayname, avatar_url) VALUES ($1, $2, $3) ON CONFLICT (lm_user_id) DO UPDATE SET displayname=excluded.displayname, avatar_url=excluded.avatar_url`
)

// GhostProfile is the profile last pushed to a ghost.
type GhostProfile struct {
	Displayname string
	AvatarURL   string
}

// Scan implements dbutil.DataStruct.
func (p *GhostProfile) Scan(row dbutil.Scannable) (*GhostProfile, error) {
	return dbutil.ValueOrErr(p, row.Scan(&p.Displayname, &p.AvatarURL))
}

// GetGhostProfile returns the profile last set on the ghost of an LM user, or nil if none was set.
func (db *Database) GetGhostProfile(ctx context.Context, lmUserID string) (*GhostProfile, error) {
	p, err := db.ghosts.QueryOne(ctx, getGhostQuery, lmUserID)
	if err != nil {
		return nil, fmt.Errorf("failed to get ghost profile: %w", err)
	}
	return p, nil
}

// PutGhostProfile records the profile set on a ghost.
func (db *Database) PutGhostProfile(ctx context.Context, lmUserID string, p GhostProfile) error {
	if _, err := db.Exec(ctx, putGhostQuery, lmUserID, p.Displayname, p.AvatarURL); err != nil {
		return fmt.Errorf("failed to store ghost profile: %w", err)
	}
	return nil
}
