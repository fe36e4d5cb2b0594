//go:build goolm

package matrixcrypto

import (
	"context"
	"errors"
	"fmt"
	"sync"

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
)

func init() {
	// The store's tracked-user query passes a list as one PostgreSQL array parameter.
	crypto.PostgresArrayWrapper = pq.Array
}

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

	syncDone   sync.WaitGroup
	cancelSync context.CancelFunc
}

var _ mautrix.CryptoHelper = (*Helper)(nil)

// New makes the helper and brings the crypto store's tables up to date; Start logs the device in.
func New(ctx context.Context, p Params) (*Helper, error) {
	if p.AS == nil || p.DB == nil || p.RoomState == nil || p.NotBridged == nil {
		return nil, errors.New("matrixcrypto needs an appservice, a database, the room state and a notifier")
	}
	log := zerolog.Ctx(ctx).With().Str("db_section", "crypto").Logger()
	h := &Helper{
		cfg:        p.Config,
		as:         p.AS,
		stateStore: p.AS.StateStore(),
		store:      crypto.NewSQLCryptoStore(p.DB, dbutil.ZeroLogger(log), accountID, "", []byte(p.Config.PickleKey)),
		params:     p,
		sharing:    exsync.NewKeyedMutex[id.RoomID](),
	}
	if err := h.store.DB.Upgrade(ctx); err != nil {
		return nil, fmt.Errorf("failed to upgrade crypto tables: %w", err)
	}
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
	if h.cfg.Appservice {
		h.as.SetExtensionHandler(h.handleExtensions)
	} else {
		syncer := &toDeviceSyncer{mach: h.mach, log: log}
		if err = h.checkSync(ctx, syncer); err != nil {
			return err
		}
		client.Syncer = syncer
		client.Store = h.store
		syncCtx, cancel := context.WithCancel(log.WithContext(context.WithoutCancel(ctx)))
		h.cancelSync = cancel
		h.syncDone.Add(1)
		go func() {
			defer h.syncDone.Done()
			h.syncLoop(syncCtx)
		}()
	}
	h.as.SetCrypto(h)
	log.Info().Stringer("device_id", client.DeviceID).Bool("existing_device", existing).Bool("appservice_mode", h.cfg.Appservice).
		Msg("End-to-bridge encryption started")
	return nil
}

// Stop ends the /sync loop and waits for it.
func (h *Helper) Stop() {
	if h.cancelSync != nil {
		h.client.StopSync()
		h.cancelSync()
	}
	h.syncDone.Wait()
}

// DeviceID is the bot's device, once started.
func (h *Helper) DeviceID() id.DeviceID {
	if h.client == nil {
		return ""
	}
	return h.client.DeviceID
}
