// Package bridge links DAG rooms on the homeserver with LM rooms and MIMI rooms: the links themselves (each says its
// protocol), the ID and user maps, the translation of events both ways, echo suppression, the bot's commands and the
// provisioning API. It sees the homeserver through MatrixSide and the remote rooms through the protocol-neutral
// remote.Rooms (package linearize for LM, mimi/rooms for MIMI, as cmd/lmbridge wires them in), and receives both
// sides' events as a dagview.Listener and a remote.Listener (the Bridge itself for LM, MIMIListener for MIMI).
// Matrix users are named in each protocol as in LM, with the protocol's server name (the MIMI provider's domain).
package bridge

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/lmbridge/lmbridge/bridge/bridgedb"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/remote"
)

// MembershipUnban is the membership MatrixSide.SetMembership takes to lift a ban (a leave sent by someone else to a
// banned user, which the client-server API spells /unban).
const MembershipUnban event.Membership = "unban"

// MatrixSide is the homeserver as the bridge acts on it: as the bot or as a ghost. MatrixAppService is the real one.
type MatrixSide interface {
	// SendMessage sends a message event as sender (joining first), with origin_server_ts ts when not zero and a
	// transaction ID derived from key, so that a retry of the same logical event is not posted twice.
	SendMessage(ctx context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, content any, ts time.Time, key string) (id.EventID, error)
	// SendState sets a state event as sender, with origin_server_ts ts when not zero.
	SendState(ctx context.Context, roomID id.RoomID, sender id.UserID, evtType event.Type, stateKey string, content any, ts time.Time) (id.EventID, error)
	// Redact redacts target as sender, with a transaction ID derived from key.
	Redact(ctx context.Context, roomID id.RoomID, sender id.UserID, target id.EventID, reason, key string) (id.EventID, error)
	// SetMembership changes target's membership as sender: join, leave, knock (sender == target), invite, leave
	// (a kick), ban or MembershipUnban.
	SetMembership(ctx context.Context, roomID id.RoomID, sender, target id.UserID, membership event.Membership, reason string) error
	// SetProfile registers user if needed and sets its display name and avatar (empty values left alone).
	SetProfile(ctx context.Context, user id.UserID, displayname string, avatar id.ContentURI) error
	// CreateRoom creates a room as creator.
	CreateRoom(ctx context.Context, creator id.UserID, req *mautrix.ReqCreateRoom) (id.RoomID, error)
	// StateEvents returns the DAG room's current state as dagview keeps it.
	StateEvents(ctx context.Context, roomID id.RoomID) ([]*event.Event, error)
}

var (
	_ remote.Listener  = (*Bridge)(nil)
	_ dagview.Listener = (*Bridge)(nil)
)

// Params are what New needs.
type Params struct {
	Config config.Bridge
	// DB is the shared database; the bridge keeps its tables under the bridge_version version table.
	DB     *dbutil.Database
	Users  *UserMapper
	Matrix MatrixSide
	// LM is the LM side; *linearize.Engine is the real one (cmd/lmbridge wires it in).
	LM remote.Rooms
	// Media carries files across; nil lets content URIs cross as they are.
	Media MediaMapper
	// MIMI is the MIMI side (*mimi/rooms.Rooms), nil when the bridge has none. Matrix users are named in it as in LM
	// but with its server name (the provider's domain); its events come through MIMIListener.
	MIMI remote.Rooms
	// Now is the clock for stored timestamps; time.Now by default.
	Now func() time.Time
	// Log is for the database's own logging; request handling logs through the logger in ctx.
	Log zerolog.Logger
}

// Bridge links DAG rooms and LM rooms.
type Bridge struct {
	cfg    config.Bridge
	db     *bridgedb.Database
	users  *UserMapper
	matrix MatrixSide
	links  *linkCache
	// commands are the bot's commands.
	commands *commandSet
	// backfilling holds the LM rooms whose history a new link is bringing in.
	backfilling backfillGates
	now         func() time.Time
	// lmProto is LM, mimi MIMI (nil without one): each with the bot's identity there, the creator of the rooms we
	// host and the author of notices.
	lmProto, mimi *protocol
	// refused are the LPDUs hubs refused in the last echoWait, so that a relation to one stops waiting for its echo.
	refused refusedLPDUs
	// media carries files across (Params.Media); nil leaves URIs as they are.
	media MediaMapper
	// enc is end-to-bridge encryption's config (SetEncryption); the zero value refuses encrypted rooms.
	enc config.Encryption
}

// New makes a Bridge; call Upgrade before handing it events.
func New(p Params) (*Bridge, error) {
	if p.DB == nil || p.Users == nil || p.Matrix == nil || p.LM == nil {
		return nil, errors.New("bridge needs a database, a user mapper, a Matrix side and an LM side")
	}
	if p.Users.LMServerName != string(p.LM.Server()) {
		return nil, fmt.Errorf("user mapper's LM server %s is not the engine's %s", p.Users.LMServerName, p.LM.Server())
	}
	br := &Bridge{
		cfg:      p.Config,
		db:       bridgedb.New(p.DB, dbutil.ZeroLogger(p.Log.With().Str("db_section", "bridge").Logger())),
		users:    p.Users,
		matrix:   p.Matrix,
		now:      p.Now,
		links:    newLinkCache(),
		media:    p.Media,
		commands: newCommandSet(),
	}
	var err error
	if br.lmProto, err = br.newProtocol(bridgedb.ProtocolLM, p.LM, p.Users); err != nil {
		return nil, err
	}
	if p.MIMI != nil {
		if p.MIMI.Server() == p.LM.Server() {
			return nil, fmt.Errorf("the MIMI domain and the LM server name are both %s", p.LM.Server())
		}
		if br.mimi, err = br.newProtocol(bridgedb.ProtocolMIMI, p.MIMI, p.Users); err != nil {
			return nil, err
		}
	}
	if br.now == nil {
		br.now = time.Now
	}
	if br.cfg.CommandPrefix == "" {
		br.cfg.CommandPrefix = "!lm"
	}
	return br, nil
}

// Upgrade brings the bridge's tables to the latest version.
func (br *Bridge) Upgrade(ctx context.Context) error {
	return br.db.Upgrade(ctx)
}

// DB is the bridge's storage, for tests and tools.
func (br *Bridge) DB() *bridgedb.Database {
	return br.db
}

// As participant, an event we sent is known by its LPDU ID until the hub's PDU comes back with the event ID. A reply,
// edit or reaction sent in that moment (a typo fixed at once) would lose its target, so the lookup waits for the echo,
// polling every echoPoll, while the LPDU is younger than echoWait: long enough for a slow hub, short enough that an LPDU
// whose refusal we never heard of (lost in a crash) holds the room up only briefly. A refusal we heard of ends the
// wait at once.
const (
	echoWait = 10 * time.Second
	echoPoll = 10 * time.Millisecond
)

// LMEventOf returns the LM event a DAG event became (or came from), "" if none, waiting for the hub's echo of an LPDU
// sent less than echoWait ago.
func (br *Bridge) LMEventOf(ctx context.Context, dagEventID id.EventID) (string, error) {
	deadline := time.Now().Add(echoWait)
	for {
		m, err := br.db.GetEventByDAG(ctx, dagEventID)
		if err != nil || m == nil {
			return "", err
		}
		if m.LMEventID != "" || m.LPDUID == "" {
			return m.LMEventID, nil
		}
		if br.refused.has(m.LPDUID) {
			zerolog.Ctx(ctx).Info().Str("dag_event_id", string(dagEventID)).Str("lpdu_id", m.LPDUID).
				Msg("The hub refused the event a relation points at")
			return "", nil
		}
		if br.now().Sub(m.CreatedAt) >= echoWait || time.Now().After(deadline) {
			zerolog.Ctx(ctx).Warn().Str("dag_event_id", string(dagEventID)).Str("lpdu_id", m.LPDUID).
				Msg("The hub never echoed the event a relation points at")
			return "", nil
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(echoPoll):
		}
	}
}

// DAGEventOf returns the DAG event an LM event became (or came from), "" if none.
func (br *Bridge) DAGEventOf(ctx context.Context, lmEventID string) (id.EventID, error) {
	m, err := br.db.GetEventByLM(ctx, lmEventID)
	if err != nil || m == nil {
		return "", err
	}
	return m.DAGEventID, nil
}
