package region

import (
	"context"
	"errors"
	"time"

	"github.com/tallyhq/tally/store"
)

// sweepInterval is how often a node deletes its expired raw events and
// claim blocks (store.Sweeper) and runs value-log GC.
const sweepInterval = time.Minute

// checkpointKickInterval is how often an idle node with unique-viewer
// chunks owed to a checkpoint cuts a batch to write a slice of them.
const checkpointKickInterval = 50 * time.Millisecond

// sweepRounds bounds the value-log files one GC run rewrites.
const sweepRounds = 64

// startSweeps runs the store's sweeps every sweepInterval, the first right
// away (a node that was down may have a backlog), and every
// checkpointKickInterval cuts a batch if a unique-viewer checkpoint is due
// or in progress, until Close stops them. Badger's TTLs count in real time,
// so the sweeps do too, whatever the node's clock; the simulator's nodes
// (ManualCommit) run none, and step their batches themselves.
func (n *Node) startSweeps() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	n.stopSweeps = func() { cancel(); <-done }
	go func() {
		defer close(done)
		w := n.store.NewSweeper()
		t := time.NewTicker(sweepInterval)
		defer t.Stop()
		// Batches even when idle while chunks wait for a unique-viewer
		// checkpoint: it writes only in batches (uniqueTable.checkpoint).
		kick := time.NewTicker(checkpointKickInterval)
		defer kick.Stop()
		n.sweep(ctx, w)
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				n.sweep(ctx, w)
			case <-kick.C:
				if n.uniques.owes(n.now().UnixMilli()) {
					n.committer.Kick()
				}
			}
		}
	}()
}

// sweep is one round of startSweeps.
func (n *Node) sweep(ctx context.Context, w *store.Sweeper) {
	start := time.Now()
	deleted, err := w.Pass(ctx, start)
	if err != nil && !errors.Is(err, context.Canceled) {
		n.log.Warn("sweep expired events", "err", err)
	}
	files, err := n.store.CollectValueLog(ctx, sweepRounds)
	if err != nil && !errors.Is(err, context.Canceled) {
		n.log.Warn("value-log GC", "err", err)
	}
	n.swept.Add(uint64(deleted))
	if deleted > 0 || files > 0 {
		n.log.Info("swept expired records", "deleted", deleted, "value_log_files_rewritten", files, "took", time.Since(start).Round(time.Millisecond))
	}
}
