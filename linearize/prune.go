package linearize

import (
	"context"
	"time"

	"github.com/rs/zerolog"
)

// The answers to received /send transactions are kept so that a repeated txnId is answered, not applied again. A
// sender retries a transaction for minutes to hours, so they are pruned after pruneRetention, in small batches so that
// no other write waits long behind the pruning.
const (
	pruneRetention = 24 * time.Hour
	pruneInterval  = time.Hour
	pruneBatch     = 1000
)

// pruneLoop prunes at start and every pruneInterval until ctx ends.
func (e *Engine) pruneLoop(ctx context.Context) {
	ticker := time.NewTicker(pruneInterval)
	defer ticker.Stop()
	for {
		if err := e.prune(ctx, e.now().Add(-pruneRetention)); err != nil && ctx.Err() == nil {
			zerolog.Ctx(ctx).Warn().Err(err).Msg("Failed to prune old received transaction answers")
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// prune deletes the received-transaction answers from before cutoff.
func (e *Engine) prune(ctx context.Context, cutoff time.Time) error {
	var total int64
	for ctx.Err() == nil {
		n, err := e.store.PruneReceivedTxns(ctx, cutoff.UnixMilli(), pruneBatch)
		if err != nil {
			return err
		}
		total += n
		if n < pruneBatch {
			break
		}
	}
	if total > 0 {
		zerolog.Ctx(ctx).Debug().Int64("rows", total).Msg("Pruned old received transaction answers")
	}
	return nil
}
