package linearize

import (
	"errors"
	"path/filepath"
	"testing"

	mautrixfed "maunium.net/go/mautrix/federation"

	"github.com/lmbridge/lmbridge/config"
	"github.com/lmbridge/lmbridge/linearize/federation"
)

// TestStartRefusesBadListenerConfig: a listener without TLS needs allow_plain_http, and a certificate that cannot be
// loaded stops Start rather than leaving the engine without a listener.
func TestStartRefusesBadListenerConfig(t *testing.T) {
	ctx := testContext(t)
	for name, tc := range map[string]struct {
		cfg  config.LM
		want error
	}{
		"plain without permission": {cfg: config.LM{Listen: "127.0.0.1:0"}, want: federation.ErrNoTLS},
		"missing certificate": {cfg: config.LM{Listen: "127.0.0.1:0", TLSCert: filepath.Join(t.TempDir(), "none.crt"),
			TLSKey: filepath.Join(t.TempDir(), "none.key")}},
	} {
		t.Run(name, func(t *testing.T) {
			db := openTestDB(t, filepath.Join(t.TempDir(), "lm.db"))
			defer db.Close()
			tc.cfg.ServerName = "start.test"
			eng := must(New(ctx, tc.cfg, db, Options{SigningKey: mautrixfed.GenerateSigningKey()}))
			err := eng.Start(ctx)
			if err == nil {
				_ = eng.Stop(ctx)
				t.Fatalf("Start succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("Start: %v, want %v", err, tc.want)
			}
		})
	}
}
