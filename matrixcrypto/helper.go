//go:build goolm

package matrixcrypto

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/lib/pq"
	"github.com/rs/zerolog"
	"go.mau.fi/util/dbutil"
	"go.mau.fi/util/exsync"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/id"
	"maunium.net/go/mautrix/sqlstatestore"

	"github.com/lmbridge/lmbridge/appservice"
	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/dagview"
	"github.com/lmbridge/lmbridge/matrixcrypto/upgrades"
)

func init() {
	// The store's tracked-user query passes a list as one PostgreSQL array parameter.
	crypto.PostgresArrayWrapper = pq.Array
}

// VersionTable is the version table of matrixcrypto's own tables.
const VersionTable = "matrixcrypto_version"

// accountID names the bot's Olm account in the crypto store's rows; one lmbridge has one bot, so it is fixed.
const accountID = "lmbridge"

// Helper is the bridge bot's Matrix device. It implements mautrix.CryptoHelper, which the appservice's intents use
// to encrypt what they send into encrypted rooms.
type Helper struct {
	cfg        config.Encryption
	as         *appservice.AppService
	stateStore *sqlstatestore.SQLStateStore
	store      *crypto.SQLCryptoStore
	params     Params

	client *mautrix.Client
	mach   *crypto.OlmMachine

	// primed holds the rooms (id.RoomID) whose encryption and members were read from dagview's state this run.
	primed sync.Map
	// sharing serialises the key share of a room, so that two ghosts sending at once share one session once.
	sharing *exsync.KeyedMutex[id.RoomID]

	db *dbutil.Database
	// archived holds the outbound sessions (id.SessionID) kept in matrixcrypto_outbound_session this run.
	archived sync.Map
	// receiveLevel is encryption.verification_levels.receive.
	receiveLevel id.TrustState
	// next is the listener the decrypted events go to (the bridge), for events bridged late.
	next dagview.Listener
	// roomLocks serialises a room's events into next: the room's worker and a late event's bridging.
	roomLocks *exsync.KeyedMutex[id.RoomID]
	// lateKick wakes the late-event worker; hasLate says whether any event is waiting for its key.
	lateKick chan struct{}
	hasLate  atomic.Bool

	background       sync.WaitGroup
	cancelBackground context.CancelFunc
}

var _ mautrix.CryptoHelper = (*Helper)(nil)

// New makes the helper and brings the crypto store's tables up to date; Start logs the device in.
func New(ctx context.Context, p Params) (*Helper, error) {
	if p.AS == nil || p.DB == nil || p.RoomState == nil || p.NotBridged == nil {
		return nil, errors.New("matrixcrypto needs an appservice, a database, the room state and a notifier")
	}
	log := zerolog.Ctx(ctx).With().Str("db_section", "crypto").Logger()
	h := &Helper{
		cfg:          p.Config,
		as:           p.AS,
		stateStore:   p.AS.StateStore(),
		store:        crypto.NewSQLCryptoStore(p.DB, dbutil.ZeroLogger(log), accountID, "", []byte(p.Config.PickleKey)),
		params:       p,
		sharing:      exsync.NewKeyedMutex[id.RoomID](),
		db:           p.DB.Child(VersionTable, upgrades.Table, dbutil.ZeroLogger(log)),
		receiveLevel: id.ParseTrustState(p.Config.Verification.Receive),
		roomLocks:    exsync.NewKeyedMutex[id.RoomID](),
		lateKick:     make(chan struct{}, 1),
	}
	if err := h.store.DB.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade crypto tables: %w", err)
	}
	if err := h.db.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade matrixcrypto tables: %w", err)
	}
	// A waiting event of an earlier run is looked at on the first pass.
	h.hasLate.Store(true)
	return h, nil
}

// Init is part of mautrix.CryptoHelper; Start does the work.
func (h *Helper) Init(ctx context.Context) error { return nil }

// Start logs the bot's device in (the same device as last run, if there was one), loads or creates its Olm account,
// uploads its keys the first time, and starts the /sync loop that brings it its to-device messages.
func (h *Helper) Start(ctx context.Context) error {
	log := zerolog.Ctx(ctx).With().Str("component", "crypto").Logger()
	client, existing, err := h.loginDevice(ctx)
	if err != nil {
		return err
	}
	h.client = client
	h.mach = crypto.NewOlmMachine(client, &log, h.store, stateStore{h.stateStore})
	h.mach.AllowKeyShare = h.allowKeyShare
	h.mach.SendKeysMinTrust = id.ParseTrustState(h.cfg.Verification.Send)
	h.mach.ShareKeysMinTrust = id.ParseTrustState(h.cfg.Verification.Share)
	h.mach.DisableDeviceChangeKeyRotation = h.cfg.Rotation.DisableDeviceChangeKeyRotation
	if err = h.mach.Load(ctx); err != nil {
		return fmt.Errorf("failed to load the bot's Olm account: %w", err)
	}
	if err = h.ensureKeysOnServer(ctx, existing); err != nil {
		return err
	}
	if err = h.pruneOutbound(ctx); err != nil {
		return err
	}
	// Keys come in to-device messages; after each batch the late-event worker looks for the ones it waits for.
	h.mach.SessionReceived = func(context.Context, id.RoomID, id.SessionID, uint32) { h.kickLate() }
	var syncer *toDeviceSyncer
	if h.cfg.Appservice {
		h.as.SetExtensionHandler(h.handleExtensions)
	} else {
		syncer = &toDeviceSyncer{mach: h.mach, log: log, onToDevice: h.kickLate}
		if err = h.checkSync(ctx, syncer); err != nil {
			return err
		}
		client.Syncer = syncer
		client.Store = h.store
	}
	bgCtx, cancel := context.WithCancel(log.WithContext(context.WithoutCancel(ctx)))
	h.cancelBackground = cancel
	h.background.Add(1)
	go func() {
		defer h.background.Done()
		h.lateWorker(bgCtx)
	}()
	if syncer != nil {
		h.background.Add(1)
		go func() {
			defer h.background.Done()
			h.syncLoop(bgCtx)
		}()
	}
	h.as.SetCrypto(h)
	log.Info().Stringer("device_id", client.DeviceID).Bool("existing_device", existing).Bool("appservice_mode", h.cfg.Appservice).
		Msg("End-to-bridge encryption started")
	return nil
}

// Stop ends the /sync loop and the late-event worker, and waits for them.
func (h *Helper) Stop() {
	if h.cancelBackground != nil {
		if !h.cfg.Appservice {
			h.client.StopSync()
		}
		h.cancelBackground()
	}
	h.background.Wait()
}

// DeviceID is the bot's device, once started.
func (h *Helper) DeviceID() id.DeviceID {
	if h.client == nil {
		return ""
	}
	return h.client.DeviceID
}
