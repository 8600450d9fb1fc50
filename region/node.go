package region

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// EventView is the event type of a video view.
const EventView = "view"

// Observer receives a node's measurements; httpapi turns them into metrics.
// Methods are called concurrently and must not block.
type Observer interface {
	// Batch is called after every group commit.
	Batch(store.BatchStats)
	// Ingested is called with the number of ingested events that met one
	// fate: once per fate an ingest call's events met, or once per event.
	Ingested(fate store.Fate, n int)
}

// wonPool holds the lists of claims that batch calls win (applyViews): a
// batch of 1,000 views would otherwise allocate and clear 64 KB for it.
var wonPool = sync.Pool{New: func() any { return new([]freshClaim) }}

// Node is one tally node. Create it with Open; it is safe for concurrent use.
type Node struct {
	cfg       Config
	log       *slog.Logger
	now       func() time.Time
	windowMs  int64
	store     *store.Store
	ownStore  bool // opened by Open, closed by Close
	committer *store.Committer
	id        store.Identity
	own       []crdt.ReplicaID // id.Replica, then every retired replica ID of the store (their claims are ours to settle)
	// storedBucketsMs is the latest start of a time bucket on disk at Open:
	// a later bucket not in memory is on no disk either, unless it was
	// evicted since (evicted, nil without a counter cache; bucketEntries).
	storedBucketsMs int64
	evicted         *evictedBuckets
	trios           trioCache // the time buckets of recently counted totals (bucketEntries)

	counters     *counterTable
	clog         *counterLog // the counter log's checkpoints (counters'; sketch chunks have entries of their own)
	claims       *claimTable
	likes        *likeTable
	uniques      *uniqueTable
	trends       *trendTracker
	users        *keyedLimiter
	ips          *keyedLimiter              // nil when per-IP limiting is off
	eventSeq     atomic.Uint64              // unique suffix of raw event keys
	sharedEvents sharedEvents               // the raw events of small ingest calls, for the next batch
	repl         atomic.Pointer[replicator] // nil unless EnableReplication was called

	expireMu      sync.Mutex   // serialises expireClaims
	nextExpire    atomic.Int64 // unix ms of the next sweep of expired claims
	compensations atomic.Uint64

	bucketExpireMu   sync.Mutex   // serialises expireBuckets
	nextBucketExpire atomic.Int64 // unix ms of the next sweep of expired buckets

	swept      atomic.Uint64 // expired records deleted by sweeps (sweep.go)
	stopSweeps func()        // stops the sweeps and waits; nil if none run

	failed    atomic.Bool // a batch failed to persist: not ready any more
	closeOnce sync.Once
	closeErr  error
}

// View is one event as received: a view unless Event says otherwise.
type View struct {
	Video    string
	User     string
	ClientMs int64  // the client's timestamp in unix ms; 0 if it sent none
	IP       string // the client's address, for per-IP limits; may be empty
	// Event is the event type: "" or "view" for a view, "like", or another
	// type the node counts (Config.EventTypes).
	Event string
	// Unlike, with Event "like", takes the user's like back.
	Unlike bool
}

// Result is what became of one view.
type Result struct {
	Counted bool
	// Fate is FateCounted, FateDuplicate, FateRateLimited or FateDenied. For
	// a like, FateCounted means the like (or unlike) changed the user's
	// state and FateDuplicate that the user was already there.
	Fate store.Fate
	// Count is the count of the event's type after this event: durable with
	// sync durability, including unsynced events with async durability.
	Count uint64
	// Err is set, in batch results only, for a view refused as invalid.
	Err error
}

// Open opens the node's store, loads (or creates) its identity and starts the
// group committer.
func Open(cfg Config) (*Node, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	n := &Node{
		cfg:      cfg,
		log:      cfg.Logger,
		now:      cfg.Clock,
		windowMs: cfg.DedupWindow.Milliseconds(),
		counters: newCounterTable(cfg.CounterCache),
		likes:    newLikeTable(),
		uniques:  newUniqueTable(),
		users:    newKeyedLimiter(cfg.UserRate, cfg.UserBurst, cfg.RateLimitKeys),
		trios:    newTrioCache(),
	}
	if n.log == nil {
		n.log = slog.New(slog.DiscardHandler)
	}
	if n.now == nil {
		n.now = time.Now
	}
	windows := cfg.TopWindows
	if windows == nil {
		windows = DefaultTopWindows
	}
	n.trends = newTrendTracker(windows)
	n.counters.ttl, n.counters.now = n.counterTTL, n.now
	if cfg.IPRate > 0 {
		n.ips = newKeyedLimiter(cfg.IPRate, cfg.IPBurst, cfg.RateLimitKeys)
	}
	st := cfg.Store
	if st == nil {
		so := store.DefaultOptions(cfg.DataDir)
		if cfg.InMemory {
			so = store.InMemoryOptions()
		}
		so.Logger = n.log
		var err error
		if st, err = store.Open(so); err != nil {
			return nil, fmt.Errorf("open node store: %w", err)
		}
		n.ownStore = true
	}
	n.store = st
	var err error
	if n.id, err = st.OpenIdentity(cfg.Durability == DurabilityAsync); err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node identity: %w", err)
	}
	if n.id.Reason != "" {
		n.log.Info("new replica id", "replica", n.id.Replica.String(), "previous", n.id.Previous.String(), "reason", n.id.Reason)
	}
	retired, err := st.RetiredReplicas()
	if err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node identity: %w", err)
	}
	n.own = append([]crdt.ReplicaID{n.id.Replica}, retired...)
	n.counters.self = n.id.Replica
	n.claims = newClaimTable(n.windowMs, cfg.LagBudget.Milliseconds())
	n.claims.inEvents = claimsInEvents(cfg)
	nowMs := n.now().UnixMilli()
	// Counter states the last run logged but did not checkpoint go into
	// their entries before anything reads one.
	if merged, err := st.ReplayCounterLog(nowMs); err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node: %w", err)
	} else if merged > 0 {
		n.log.Info("counter log replayed", "states", merged)
	}
	var owing []store.ClaimKey
	var owingMu sync.Mutex // fn is called concurrently
	owe := func(k store.ClaimKey) {
		owingMu.Lock()
		owing = append(owing, k)
		owingMu.Unlock()
	}
	loadStart := time.Now()
	maxBlockSeq, err := n.forEachStoredClaim(nowMs, func(k store.ClaimKey, c crdt.Claims) error {
		if k.Event == EventLike {
			n.likes.load(k, c)
			if owesAny(c, n.own) {
				owe(k)
			}
			return nil
		}
		if n.claims.expiryMs(k.Window) > nowMs {
			n.claims.load(k, c)
			if owesAny(c, n.own) {
				owe(k)
			}
		}
		return nil
	})
	if err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node: load claims: %w", err)
	}
	n.log.Info("claims loaded", "sets", n.claims.len(), "took", time.Since(loadStart).Round(time.Millisecond))
	// Unique-viewer sketches live in memory whole; recent buckets feed the
	// trending windows. The scan runs on every core: both tables are safe
	// for concurrent use, and what they end up holding does not depend on
	// the order of keys (register maxima, sums, the latest bucket).
	var storedBucketsMs atomic.Int64
	err = st.ForEachCounterParallel(runtime.GOMAXPROCS(0), func(k crdt.Key, c crdt.PNCounter) error {
		if k.IsUnique() {
			if err := n.uniques.load(k, c); err != nil {
				n.log.Warn("stored unique-viewer chunk refused", "key", k.String(), "err", err)
			}
			return nil
		}
		if b, ok := crdt.ParseBucketKey(k); ok {
			raiseTo(&storedBucketsMs, b.Res.Start(b.Index))
			if n.bucketExpiryMs(b) > nowMs {
				n.trends.observe(b, c.P.Value()-c.N.Value(), nowMs) // signed net, wrapped (see observeBuckets)
			}
		}
		return nil
	})
	n.storedBucketsMs = max(n.storedBucketsMs, storedBucketsMs.Load())
	if err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node: load sketches and buckets: %w", err)
	}
	n.uniques.deferLocal = sketchesInEvents(cfg)
	if err := n.replaySketches(nowMs); err != nil {
		if n.ownStore {
			st.Close()
		}
		return nil, fmt.Errorf("open node: %w", err)
	}
	if cfg.CounterCache > 0 && !cfg.DisableTimeBuckets {
		n.evicted = newEvictedBuckets(cfg.CounterCache)
		n.counters.onEvict = func(k crdt.Key) {
			// An evicted bucket is on disk: bucketEntries must read it back.
			if b, ok := crdt.ParseBucketKey(k); ok && b.Res.Start(b.Index) > n.storedBucketsMs {
				n.evicted.add(b)
			}
		}
	}
	n.counters.onDurable = func(entries []*counterEntry) {
		n.observeBuckets(entries)
		if n.repl.Load() == nil {
			return // nothing to replicate: skip naming the keys
		}
		keys := make([]crdt.Key, len(entries))
		for i, e := range entries {
			keys[i] = e.key
		}
		n.replicateDurable(keys)
	}
	// Raw-event and claim-block keys end in this sequence: it starts above
	// every stored block's, and (for events, whose keys hold their time) at
	// the clock, so that keys stay unique across restarts.
	n.eventSeq.Store(max(uint64(time.Now().UnixNano()), maxBlockSeq+1))
	n.clog = newCounterLog(n.nextSeq)
	if cfg.CounterLogEpoch > 0 {
		n.clog.epochRecords = cfg.CounterLogEpoch
	}
	// The counters an epoch logs stay in memory until it is checkpointed:
	// at most a quarter of the cache per epoch (about three epochs are
	// held at once).
	n.clog.maxMembers = cfg.CounterCache / 4
	n.counters.log = n.clog
	n.committer = store.NewCommitter(st, store.CommitterConfig{
		Prepare:    n.prepareBatch,
		MaxPending: cfg.MaxPending,
		Observe:    n.observeBatch,
		Manual:     cfg.ManualCommit,
	})
	n.claims.done = n.committer.Done
	// A claim set stored as lost but not compensated (written by a version
	// that did not compensate, or a claim of a replica ID retired since it
	// was merged): apply the rule now.
	for _, k := range owing {
		if _, err := n.mergeClaims(k, crdt.Claims{}); err != nil {
			n.Close()
			return nil, fmt.Errorf("open node: settle claim: %w", err)
		}
	}
	if !cfg.ManualCommit {
		n.startSweeps()
	}
	return n, nil
}

// Close flushes every acknowledged and pending write, marks a clean shutdown
// and closes the store. It is safe to call more than once.
func (n *Node) Close() error {
	n.closeOnce.Do(func() {
		var errs []error
		if n.stopSweeps != nil {
			n.stopSweeps() // they write to the store directly
		}
		n.uniques.final.Store(true) // the last batch writes every owed chunk
		if err := n.committer.Close(); err != nil {
			errs = append(errs, fmt.Errorf("final group commit: %w", err))
		} else if _, err := n.store.ReplayCounterLog(n.now().UnixMilli()); err != nil {
			// A clean stop leaves every counter in its own entry.
			errs = append(errs, fmt.Errorf("checkpoint the counter log: %w", err))
		}
		if len(errs) == 0 && n.cfg.Durability == DurabilityAsync {
			if err := n.store.MarkClean(); err != nil {
				errs = append(errs, err)
			}
		}
		if n.ownStore {
			if err := n.store.Close(); err != nil {
				errs = append(errs, err)
			}
		}
		n.closeErr = errors.Join(errs...)
	})
	return n.closeErr
}

// Identity returns the node's replica identity.
func (n *Node) Identity() store.Identity { return n.id }

// Region is the name of the node's region.
func (n *Node) Region() string { return n.cfg.Region }

// Ready reports whether the node can take writes.
func (n *Node) Ready() bool { return !n.failed.Load() }

func (n *Node) prepareBatch(dst []store.Mutation) ([]store.Mutation, func(error)) {
	dst = n.sharedEvents.mutations(dst, n.id.Replica, n.nextSeq, n.cfg.EventRetention)
	dst, after, err := n.counters.prepare(dst)
	if err != nil {
		n.log.Error("encode counter state", "err", err)
	}
	// Prepare runs with admission held off, so a claim set and the counter
	// change it explains (a count, a compensation) land in the same batch.
	nowMs := n.now().UnixMilli()
	dst, claimed, err := n.claims.prepare(dst, nowMs, n.id.Replica, n.nextSeq)
	if err != nil {
		n.log.Error("encode claim set", "err", err)
	}
	dst, liked, err := n.likes.prepare(dst)
	if err != nil {
		n.log.Error("encode like transition", "err", err)
	}
	dst, sketched, err := n.uniques.prepare(dst)
	if err != nil {
		n.log.Error("encode unique-viewer chunk", "err", err)
	}
	dst, sketchCP := n.uniques.checkpoint(dst, nowMs, len(sketched))
	// Last, with every changed counter and chunk logged: the counter log's
	// checkpoint writes and deletions (counterlog.go).
	dst, drained, deleted, err := n.clog.prepare(dst, nowMs)
	if err != nil {
		n.log.Error("encode counter log checkpoint", "err", err)
	}
	// With every change of this batch taken, and admission held off: clean
	// counters over the cache's bound leave memory.
	n.counters.evict()
	if len(claimed)+len(liked)+len(sketched)+len(drained)+len(deleted)+len(sketchCP.keys) == 0 && !sketchCP.mark {
		return dst, after
	}
	return dst, func(err error) {
		after(err)
		n.clog.done(err, drained, deleted)
		if err != nil {
			n.claims.requeue(claimed)
			n.likes.requeue(liked)
			n.uniques.requeue(sketched)
			n.uniques.reowe(sketchCP)
			return
		}
		// A transition this node made while merging (one made again for a
		// lost latest intent) is released here, where it is durable; the
		// ingest path releases its own after its batch too.
		for _, k := range liked {
			n.likes.settle(k)
		}
		n.uniques.settle(sketched)
		if n.repl.Load() == nil {
			return // nothing to replicate: skip naming the keys
		}
		keys := make([]crdt.Key, 0, len(claimed)+len(liked)+len(sketched))
		for _, k := range claimed {
			keys = append(keys, k.Key())
		}
		for _, k := range liked {
			keys = append(keys, k.Key())
		}
		for _, w := range sketched {
			keys = append(keys, w.key)
		}
		n.replicateDurable(keys)
	}
}

func (n *Node) observeBatch(st store.BatchStats) {
	if st.Err != nil && !n.failed.Swap(true) {
		n.log.Error("group commit failed; node is no longer ready", "err", st.Err)
	}
	if n.cfg.Observer != nil {
		n.cfg.Observer.Batch(st)
	}
	n.flushAcks()
}

// RecordView ingests one view. It returns an *InputError for invalid input,
// ErrOverloaded when the commit queue is full, ErrUnavailable when the write
// could not be persisted, or the context's error if ctx ended while waiting
// for durability (the view may still be counted; a retry is safe).
func (n *Node) RecordView(ctx context.Context, v View) (Result, error) {
	res, err := n.RecordViews(ctx, []View{v})
	if err != nil {
		return Result{}, err
	}
	if res[0].Err != nil {
		return Result{}, res[0].Err
	}
	return res[0], nil
}

// RecordViews ingests a batch of views with one wait for durability. Invalid
// views get an *InputError in their Result, and views whose state could not be
// read from disk an ErrUnavailable; both are skipped. The error return is for
// failures of the whole batch (see RecordView); then nothing was counted.
func (n *Node) RecordViews(ctx context.Context, views []View) ([]Result, error) {
	results := make([]Result, len(views))
	b, err := n.applyViews(views, results)
	// Release repeats waiting on our claims (possibly in this very batch)
	// whatever happens next: the claims are final once their batch is.
	defer n.settle(&b)
	if err != nil {
		return nil, err
	}
	if n.cfg.Durability == DurabilitySync {
		if b.submitted {
			if err := b.ticket.Wait(ctx); err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				return nil, fmt.Errorf("%w: %v", ErrUnavailable, err)
			}
		}
		n.settle(&b)
		for _, w := range b.waits {
			select {
			case <-w:
			case <-ctx.Done():
				return nil, fmt.Errorf("wait for the claim of a repeat view: %w", ctx.Err())
			}
		}
	}
	n.fillCounts(&b, results)
	return results, nil
}

// Pending is a batch of views handed to the committer by SubmitViews.
type Pending struct {
	n       *Node
	b       ingestBatch
	results []Result
}

// SubmitViews is RecordViews without the wait, for a caller that drives a
// ManualCommit node itself (the simulator): it applies the views and hands
// them to the committer. The results' fates are final; Done reports when the
// batch holding them is durable, and Results then gives the counts.
func (n *Node) SubmitViews(views []View) (*Pending, error) {
	p := &Pending{n: n, results: make([]Result, len(views))}
	var err error
	if p.b, err = n.applyViews(views, p.results); err != nil {
		n.settle(&p.b)
		return nil, err
	}
	return p, nil
}

// Done reports whether the views are durable (always true with async
// durability, where they are acknowledged before fsync). It returns the batch's
// error, if its write failed.
func (p *Pending) Done() (bool, error) {
	if p.n.cfg.Durability == DurabilitySync && p.b.submitted {
		select {
		case <-p.b.ticket.Done():
		default:
			return false, nil
		}
		if err := p.b.ticket.Wait(context.Background()); err != nil {
			p.n.settle(&p.b)
			return true, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
	}
	p.n.settle(&p.b)
	return true, nil
}

// Results returns what became of each view, with counts as of now.
func (p *Pending) Results() []Result {
	p.n.fillCounts(&p.b, p.results)
	return p.results
}

// StepCommit writes the next group-commit batch (ManualCommit nodes only)
// and reports whether there was anything to write.
func (n *Node) StepCommit() bool { return n.committer.Step() }

// settle releases the like transitions made by b (idempotent). Claims won
// by b need no release: they settle with their batch (claimTable.claimUnqueued).
func (n *Node) settle(b *ingestBatch) {
	for _, k := range b.claimed {
		n.likes.settle(k)
	}
	b.claimed = nil
}

func (n *Node) fillCounts(b *ingestBatch, results []Result) {
	for i := range results {
		if e := b.entries[i]; e != nil && e.key.Event == EventLike {
			results[i].Count = n.likes.count(e.key.Video)
		} else if e != nil {
			if n.cfg.Durability == DurabilitySync {
				results[i].Count = e.view.Load().value
			} else {
				results[i].Count = n.counters.liveValue(e)
			}
		}
	}
}

// ingestBatch is what applyViews did, for RecordViews to wait on.
type ingestBatch struct {
	ticket    store.Ticket
	submitted bool
	claimed   []store.ClaimKey   // like transitions made; settle them when final
	waits     []<-chan struct{}  // claims of repeats, not yet durable
	entries   []*counterEntry    // per view; nil for a view in error
	buckets   [][3]*counterEntry // per view: its minute, hour and day buckets
}

// applyViews decides the fate of each view, applies the counted ones to
// memory and submits the claims and raw events, all while holding the next
// batch open (Committer.Admit): the counters Prepare writes and the claims
// that counted them land in the same batch.
func (n *Node) applyViews(views []View, results []Result) (ingestBatch, error) {
	b := ingestBatch{entries: make([]*counterEntry, len(views)), buckets: make([][3]*counterEntry, len(views))}
	// Resolve what can fail before anything changes.
	now := n.now()
	nowMs := now.UnixMilli()
	// Views of a video already resolved in this call share its entries: a
	// batch of one hot video looks its counter and buckets up once.
	var resolved map[crdt.Key]int // key → index of the first view with it
	if len(views) > 1 {
		resolved = make(map[crdt.Key]int)
	}
	// A large call decides its views' rate limits and claims a table shard
	// at a time first (decideMany), and adds the views it counts of one
	// key to its counter and buckets at once at the end; a small one goes
	// view by view.
	var sc *decideScratch
	if len(views) > sharedEventsMax {
		sc = decideScratchPool.Get().(*decideScratch)
		defer sc.release()
		sc.firstOf = append(sc.firstOf[:0], make([]int, len(views))...)
		sc.adds = append(sc.adds[:0], make([]uint64, len(views))...)
	}
	for i, v := range views {
		if err := n.validate(v, nowMs); err != nil {
			results[i].Err = err
			continue
		}
		key := crdt.Key{Video: v.Video, Event: v.eventOf()}
		if j, ok := resolved[key]; ok {
			b.entries[i], b.buckets[i] = b.entries[j], b.buckets[j]
			if sc != nil {
				sc.firstOf[i] = j
			}
			continue
		}
		e, err := n.entry(key)
		if err != nil {
			results[i].Err = err
			continue
		}
		if b.buckets[i], err = n.bucketEntries(e, v.Video, v.eventOf(), nowMs); err != nil {
			results[i].Err = err
			continue
		}
		b.entries[i] = e
		if resolved != nil {
			resolved[key] = i
		}
		if sc != nil {
			sc.firstOf[i] = i
		}
	}
	n.expireClaims(now)
	n.expireBuckets(now)
	var release func()
	for {
		var err error
		release, err = n.committer.Admit(2 * len(views))
		switch {
		case errors.Is(err, store.ErrOverloaded):
			return b, ErrOverloaded
		case errors.Is(err, store.ErrClosed):
			return b, ErrClosed
		case err != nil:
			return b, fmt.Errorf("%w: %v", ErrUnavailable, err)
		}
		// An entry evicted between its resolving and the gate (rare: a
		// sweep spares entries just used) is resolved again, without the
		// gate; the gate keeps the others in the table from here on.
		if !n.reresolve(views, results, &b, nowMs, true) {
			break
		}
		release()
		n.reresolve(views, results, &b, nowMs, false)
	}
	defer release()

	window := uint64(nowMs / n.windowMs)
	// A claim won here is durable when the batch it is admitted to is.
	var batch uint64
	if n.cfg.Durability == DurabilitySync {
		batch = n.committer.Next().Seq()
	}
	// The raw events of this call, logged as few entries: in a block of its
	// own, or for a few events, in the batch's shared blocks.
	var events store.EventBlock
	var few [sharedEventsMax]loggedView
	nFew, shared := 0, len(views) <= sharedEventsMax
	// The claims this call wins, queued for the batch together after the
	// loop; and how many events had each fate, for the Observer.
	var fewWon [sharedEventsMax]freshClaim
	won := fewWon[:0]
	var fates [store.FateReapplied + 1]int // by fate, every fate there is
	if !shared {
		events.Grow(len(views), 24*len(views))
		buf := wonPool.Get().(*[]freshClaim)
		won = (*buf)[:0]
		defer func() {
			clear(won) // drop the IDs
			*buf = won[:0]
			wonPool.Put(buf)
		}()
	}
	var decided []viewDecision
	if sc != nil {
		decided = n.decideMany(sc, views, b.entries, now, window, batch)
	}
	for i, v := range views {
		e := b.entries[i]
		if e == nil {
			continue
		}
		var d viewDecision
		if decided != nil {
			d = decided[i]
		} else {
			d = n.decide(v, now, window, batch)
		}
		fate := d.fate
		switch {
		case fate != store.FateCounted:
		case v.eventOf() == EventLike:
			k, made, synced := n.likes.transition(v.Video, v.User, !v.Unlike, n.id.Replica, nowMs)
			if made {
				b.claimed = append(b.claimed, k)
				n.count(e, b.buckets[i], v.Unlike, nowMs)
			} else {
				fate = store.FateDuplicate
				if synced != nil {
					b.waits = append(b.waits, synced)
				}
			}
		case d.claim.won:
			won = append(won, freshClaim{key: claimKey(v, window), ingestMs: nowMs})
			if sc != nil {
				f := sc.firstOf[i]
				if b.entries[f] != e || b.buckets[f] != b.buckets[i] {
					f = i // resolved again apart (reresolve)
				}
				sc.adds[f]++
			} else {
				n.count(e, b.buckets[i], false, nowMs)
			}
			if v.eventOf() == EventView {
				n.uniques.insert(v.Video, v.User, nowMs)
			}
		default:
			fate = store.FateDuplicate
			if d.claim.synced != nil {
				b.waits = append(b.waits, d.claim.synced)
			}
		}
		results[i].Fate, results[i].Counted = fate, fate == store.FateCounted
		if shared {
			few[nFew] = loggedView{video: v.Video, event: v.loggedEvent(), user: v.User, clientMs: v.ClientMs, fate: fate}
			nFew++
		} else {
			events.Add(v.Video, v.loggedEvent(), v.User, v.ClientMs, fate)
		}
		fates[fate]++
	}
	if sc != nil {
		for i, k := range sc.adds {
			if k > 0 {
				n.countMany(b.entries[i], b.buckets[i], k, nowMs)
			}
		}
	}
	n.claims.queueFresh(won)
	if n.cfg.Observer != nil {
		for f, count := range fates {
			if count > 0 {
				n.cfg.Observer.Ingested(store.Fate(f), count)
			}
		}
	}
	if events.Len()+nFew == 0 {
		return b, nil
	}
	var muts []store.Mutation
	if shared {
		n.sharedEvents.add(nowMs, few[:nFew])
	} else {
		muts = events.Mutations(nowMs, n.id.Replica, n.nextSeq, n.cfg.EventRetention)
	}
	var err error
	if b.ticket, err = n.committer.Submit(muts...); err != nil {
		// Admit holds Close off, so this cannot happen; say so loudly if it does.
		return b, fmt.Errorf("%w: submit admitted batch: %v", ErrUnavailable, err)
	}
	b.submitted = true
	if n.cfg.Durability == DurabilityAsync {
		n.settle(&b)
	}
	return b, nil
}

// viewDecision is what a view's rate limits and claim decided (decide):
// its fate, FateCounted unless it was denied or rate limited, and the
// outcome of its claim, for a view that is not a like and was claimed.
type viewDecision struct {
	fate  store.Fate
	claim claimOutcome
}

// claimKey is the key of v's claim in dedup window window.
func claimKey(v View, window uint64) store.ClaimKey {
	return store.ClaimKey{Video: v.Video, Event: claimEvent(v.eventOf()), User: v.User, Window: window}
}

// decide checks v against the deny list and rate limits at now and, if it
// passes and is not a like, claims it in window for batch (claimUnqueued).
// Callers hold the admission gate and queue the claim if it was won.
func (n *Node) decide(v View, now time.Time, window, batch uint64) viewDecision {
	switch {
	case n.cfg.Deny.denies(v.User, v.IP):
		return viewDecision{fate: store.FateDenied}
	case !n.users.allow(v.User, now) || (n.ips != nil && v.IP != "" && !n.ips.allow(v.IP, now)):
		return viewDecision{fate: store.FateRateLimited}
	case v.eventOf() == EventLike:
		return viewDecision{fate: store.FateCounted}
	}
	won, synced := n.claims.claimUnqueued(claimKey(v, window), n.id.Replica, now.UnixMilli(), batch)
	return viewDecision{fate: store.FateCounted, claim: claimOutcome{won: won, synced: synced}}
}

// decideScratch is the working memory of a large ingest call (applyViews,
// decideMany), pooled.
type decideScratch struct {
	firstOf  []int    // per view, the index of the first view of its key
	adds     []uint64 // per first view of a key, the views of the key counted
	out      []viewDecision
	sel      []int // views asked about in the current step
	keys     []string
	allowed  []bool
	claims   []store.ClaimKey
	outcomes []claimOutcome
}

var decideScratchPool = sync.Pool{New: func() any { return new(decideScratch) }}

// release drops the strings and channels sc holds and pools it again.
func (sc *decideScratch) release() {
	clear(sc.out)
	clear(sc.keys)
	clear(sc.claims)
	clear(sc.outcomes)
	decideScratchPool.Put(sc)
}

// decideMany is decide for every view i of a large call with an entry
// (entries[i] not nil), in turn, with the same outcomes, but a step at a
// time: the deny list, then the user limiter, the address limiter and the
// claims, each for all the views the step before passed at once
// (keyedLimiter.allowMany, claimTable.claimMany). A view's outcome depends
// on the views before it of the same user, address or claim key, whose
// order every step keeps. The decisions are in sc until sc.release.
func (n *Node) decideMany(sc *decideScratch, views []View, entries []*counterEntry, now time.Time, window, batch uint64) []viewDecision {
	sc.out = append(sc.out[:0], make([]viewDecision, len(views))...)
	out := sc.out
	for i, v := range views {
		out[i].fate = store.FateCounted
		if entries[i] != nil && n.cfg.Deny.denies(v.User, v.IP) {
			out[i].fate = store.FateDenied
		}
	}
	// pick puts in sc.sel the views with an entry still to be counted
	// that the next step asks about.
	pick := func(asked func(View) bool) {
		sc.sel = sc.sel[:0]
		for i, v := range views {
			if entries[i] != nil && out[i].fate == store.FateCounted && asked(v) {
				sc.sel = append(sc.sel, i)
			}
		}
	}
	// limit asks l about keyOf(view) for each view in sc.sel and marks
	// those it refuses as rate limited.
	limit := func(l *keyedLimiter, keyOf func(View) string) {
		sc.keys = sc.keys[:0]
		for _, i := range sc.sel {
			sc.keys = append(sc.keys, keyOf(views[i]))
		}
		sc.allowed = append(sc.allowed[:0], make([]bool, len(sc.keys))...)
		l.allowMany(sc.keys, now, sc.allowed)
		for j, i := range sc.sel {
			if !sc.allowed[j] {
				out[i].fate = store.FateRateLimited
			}
		}
	}
	pick(func(View) bool { return true })
	limit(n.users, func(v View) string { return v.User })
	if n.ips != nil {
		pick(func(v View) bool { return v.IP != "" })
		limit(n.ips, func(v View) string { return v.IP })
	}
	pick(func(v View) bool { return v.eventOf() != EventLike })
	sc.claims = sc.claims[:0]
	for _, i := range sc.sel {
		sc.claims = append(sc.claims, claimKey(views[i], window))
	}
	sc.outcomes = append(sc.outcomes[:0], make([]claimOutcome, len(sc.claims))...)
	n.claims.claimMany(sc.claims, n.id.Replica, now.UnixMilli(), batch, sc.outcomes)
	for j, i := range sc.sel {
		out[i].claim = sc.outcomes[j]
	}
	return out
}

// reresolve resolves again the entries of b that have been evicted, and
// reports whether there were any; with check, it only reports.
func (n *Node) reresolve(views []View, results []Result, b *ingestBatch, nowMs int64, check bool) bool {
	stale := false
	for i, e := range b.entries {
		if e == nil {
			continue
		}
		evicted := e.isEvicted()
		bucketsEvicted := false
		for _, be := range b.buckets[i] {
			bucketsEvicted = bucketsEvicted || be != nil && be.isEvicted()
		}
		if !evicted && !bucketsEvicted {
			continue
		}
		stale = true
		if check {
			return true
		}
		var err error
		if evicted {
			b.entries[i], err = n.entry(e.key)
		}
		if err == nil && bucketsEvicted {
			b.buckets[i], err = n.bucketEntries(b.entries[i], views[i].Video, views[i].eventOf(), nowMs)
		}
		if err != nil {
			b.entries[i], results[i].Err = nil, err
		}
	}
	return stale
}

// nextSeq is the next number of the sequence that makes raw-event and
// claim-block keys unique.
func (n *Node) nextSeq() uint64 { return n.eventSeq.Add(1) }

func msDuration(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }

// countMany applies k counted events to e and its buckets (up counts
// only), as k calls of count would. Callers hold the admission gate.
func (n *Node) countMany(e *counterEntry, buckets [3]*counterEntry, k uint64, nowMs int64) {
	n.counters.increment(e, n.id.Replica, k, nowMs)
	for _, c := range buckets {
		if c != nil {
			n.counters.increment(c, n.id.Replica, k, nowMs)
		}
	}
}

// count applies one counted event (or, with down, an unlike) to its counter
// and its buckets. Callers hold the admission gate.
func (n *Node) count(e *counterEntry, buckets [3]*counterEntry, down bool, nowMs int64) {
	for i := -1; i < len(buckets); i++ {
		c := e
		if i >= 0 {
			if c = buckets[i]; c == nil {
				continue // time buckets are off
			}
		}
		if down {
			n.counters.decrement(c, n.id.Replica, nowMs)
		} else {
			n.counters.increment(c, n.id.Replica, 1, nowMs)
		}
	}
}

// claimEvent is the Event of the claim key of an event of type ev: empty for
// views (their claims keep the names they had before event types).
func claimEvent(ev string) string {
	if ev == EventView {
		return ""
	}
	return ev
}

func (n *Node) validate(v View, nowMs int64) error {
	if err := CheckID(CodeInvalidVideoID, "videoId", v.Video); err != nil {
		return err
	}
	if v.Event != "" {
		if err := n.checkEvent(v.Event); err != nil {
			return err
		}
	}
	if v.Unlike && v.Event != EventLike {
		return inputErr(CodeInvalidEvent, "only a like can be taken back")
	}
	if err := CheckID(CodeInvalidUserID, "userId", v.User); err != nil {
		return err
	}
	if v.ClientMs != 0 {
		if v.ClientMs > nowMs+n.cfg.MaxClockSkew.Milliseconds() {
			return inputErr(CodeInvalidTimestamp, "timestamp %d is more than %v in the future", v.ClientMs, n.cfg.MaxClockSkew)
		}
		if v.ClientMs < nowMs-n.cfg.MaxEventAge.Milliseconds() {
			return inputErr(CodeInvalidTimestamp, "timestamp %d is more than %v in the past", v.ClientMs, n.cfg.MaxEventAge)
		}
	}
	return nil
}

// entry returns the in-memory entry for k, loading it from Badger if needed.
func (n *Node) entry(k crdt.Key) (*counterEntry, error) {
	return n.counters.load(k, func() (crdt.PNCounter, bool, error) {
		c, _, err := n.storedCounter(k)
		return c, true, err
	})
}

// storedCounter reads counter k's state from Badger, and whether it is
// there; a read that fails is ErrUnavailable.
func (n *Node) storedCounter(k crdt.Key) (crdt.PNCounter, bool, error) {
	c, ok, err := n.store.Counter(k)
	if err != nil {
		return crdt.PNCounter{}, false, fmt.Errorf("%w: load counter: %v", ErrUnavailable, err)
	}
	return c, ok, nil
}

// Count is a counter's durable value as this node knows it.
type Count struct {
	Value uint64
	// Compensated is how many counts this video's replicas took back
	// because a failover had counted the same view in two places: Value +
	// Compensated is every count ever made (it never decreases).
	Compensated uint64
	LastUpdated time.Time // zero if never updated
}

// Views returns the view count of video. A video never viewed has count 0.
func (n *Node) Views(video string) (Count, error) { return n.Count(video, EventView) }

// Stats are gauges of a node's memory.
type Stats struct {
	Counters int // counters held in memory
	Claims   int // dedup claim sets held in memory
	// LikeTransitions is the like/unlike transitions held in memory.
	LikeTransitions int
	// Sketches and SketchChunks are the unique-viewer sketches held in
	// memory and their 256-register chunks.
	Sketches, SketchChunks int
	// TrendValues is the (video, bucket) values the trending windows hold.
	TrendValues int
	// Compensations counts the views this node took back since it started:
	// its claim lost to an earlier one for the same view elsewhere.
	Compensations uint64
	RateBuckets   int // rate-limit keys held in memory: buckets and first-seen records
	// ExpiredSwept counts the expired raw events and claim blocks the
	// node's sweeps deleted from disk since it started (sweep.go).
	ExpiredSwept uint64
	StoreLSM     int64
	StoreValLog  int64
	ReplicaID    crdt.ReplicaID
	Durability   Durability
	DedupWindow  time.Duration
	Region       string
	StartedFresh bool // a new replica ID was taken at start
}

// CountersEvicted is how many counters left memory over Config.CounterCache
// since the node opened (each read back from Badger on its next use).
func (n *Node) CountersEvicted() uint64 { return n.counters.evicted.Load() }

// Stats samples the node's gauges.
func (n *Node) Stats() Stats {
	lsm, vlog := n.store.Size()
	rb := n.users.len()
	if n.ips != nil {
		rb += n.ips.len()
	}
	sk, chunks := n.uniques.len()
	return Stats{
		LikeTransitions: n.likes.len(), Sketches: sk, SketchChunks: chunks, TrendValues: n.trends.len(),
		Counters: n.counters.len(), Claims: n.claims.len(), Compensations: n.compensations.Load(), RateBuckets: rb, ExpiredSwept: n.swept.Load(),
		StoreLSM: lsm, StoreValLog: vlog, ReplicaID: n.id.Replica,
		Durability: n.cfg.Durability, DedupWindow: n.cfg.DedupWindow, Region: n.cfg.Region,
		StartedFresh: n.id.Reason != "",
	}
}
