package linearize

import (
	"context"
	"fmt"
	"time"

	"github.com/rs/zerolog"
)

// Two tables only grow: the answers to received /send transactions (kept so that a repeated txnId is answered, not
// applied again) and our LPDUs not yet echoed by their hub. A sender retries a transaction for minutes to hours, and
// an LPDU the hub has not echoed in a day never will be, so both are pruned after pruneRetention, in small batches so
// that no other write waits long behind the pruning.
const (
	pruneRetention = 24 * time.Hour
	pruneInterval  = time.Hour
	pruneBatch     = 1000
)

// Row-value IN works in SQLite and PostgreSQL alike, where DELETE … LIMIT does not.
const (
	pruneReceivedTxnQuery = `
		DELETE FROM lm_received_txn WHERE (origin, txn_id) IN (
			SELECT origin, txn_id FROM lm_received_txn WHERE received_at < $1 LIMIT $2
		)`
	prunePendingLPDUQuery = `
		DELETE FROM lm_pending_lpdu WHERE lpdu_id IN (SELECT lpdu_id FROM lm_pending_lpdu WHERE sent_at < $1 LIMIT $2)
	`
)

// pruneLoop prunes at start and every pruneInterval until ctx ends.
func (e *Engine) pruneLoop(ctx context.Context) {
	ticker := time.NewTicker(pruneInterval)
	defer ticker.Stop()
	for {
		if err := e.prune(ctx, e.now().Add(-pruneRetention)); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune old transaction answers and pending LPDUs")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// prune deletes received-transaction answers and pending LPDUs from before cutoff.
func (e *Engine) prune(ctx context.Context, cutoff time.Time) error {
	for _, q := range []struct{ name, query string }{
		{"received transaction answers", pruneReceivedTxnQuery},
		{"pending LPDUs", prunePendingLPDUQuery},
	} {
		var total int64
		for ctx.Err() == nil {
			res, err := e.store.exec(ctx, q.query, cutoff.UnixMilli(), pruneBatch)
			if err != nil {
				return fmt.Errorf("failed to prune %s: %w", q.name, err)
			}
			n, _ := res.RowsAffected()
			total += n
			if n < pruneBatch {
				break
			}
		}
		if total > 0 {
			zerolog.Ctx(ctx).Debug().Int64("rows", total).Str("table", q.name).Msg("Pruned old rows")
		}
	}
	return nil
}
