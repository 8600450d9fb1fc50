package region

import (
	"cmp"
	"fmt"
	"hash/maphash"
	"math/bits"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

const uniqueShards = 64

// uniqueSparseMax is the most nonzero registers a sketch keeps as a sorted
// list (4 bytes each) before it switches to a flat array of every register
// (16 KiB). Below it the list is smaller even with append's spare capacity;
// about 2,100 distinct viewers fill it.
const uniqueSparseMax = 2048

// uniqueTable holds the unique-viewer sketch (crdt.HLLPosition) of every
// video this node has seen a viewer of, in memory whole: Open loads every
// stored chunk, so reads never go to Badger. A sketch grows only by register
// max, from local views (insert) and replicated chunks (merge); a chunk
// whose registers grew is queued once for the next batch, whose Prepare hook
// writes its current state (prepare).
//
// Only durable registers replicate (state), as with counters: a register of
// a view that is not on disk yet could outlive that view in a crash (with
// async durability the view is acknowledged and then lost) at every peer,
// and count a viewer nobody counted. A chunk that grew since its last
// durable write is pending and keeps a shadow copy of its durable registers,
// which is what ships until the batch holding its growth is durable.
//
// With deferLocal, a chunk grown by local views alone is not written with
// their batch: their counted events, in the same batch, are its record
// (as they are of the claims they won), and a node replays the counted
// views logged since the sketch mark into its sketches at start (Open).
// Such chunks are owed, and a checkpoint writes them: every
// sketchCheckpointEvery it takes the list of owed chunks, writes them over
// the next batches at a pace (sketchSliceMin; in any batch at least as
// many as grew in it, so that it keeps up), and with the last ones records
// its start as the new mark. A
// chunk grown by replication, or by a view ingested before the checkpoint
// in progress started (which the new mark would not replay), is written
// with its batch (forced). Spread batches wrote one chunk per view (issue 9:
// 24% of the server's CPU went to Badger's memtable inserts).
//
// A uniqueTable is safe for concurrent use.
type uniqueTable struct {
	seed   maphash.Seed
	shards [uniqueShards]uniqueShard

	// queue holds the chunks changed since the last batch was cut, each at
	// most once: a chunk is appended only when its queued bit goes from 0 to 1.
	queue keyQueue[crdt.Key]

	// deferLocal lets chunks grown by local views wait for a checkpoint. It
	// is set (at Open) only when the event log outlives a checkpoint by far.
	deferLocal bool
	// owed holds the chunks whose owed bit went from 0 to 1, each at most
	// once while it is set: the next checkpoint's list.
	owed keyQueue[crdt.Key]
	// cycleStartMs is when (unix ms, the node's clock at the batch's cut)
	// the checkpoint in progress, or the last one, started: a local view
	// ingested before it forces its chunk's write. Ingest reads it with
	// admission held; prepare sets it with admission held off.
	cycleStartMs atomic.Int64
	// checkpointing is set while a checkpoint has owed chunks left to write;
	// nextCycle mirrors nextCycleMs, for owes.
	checkpointing atomic.Bool
	nextCycle     atomic.Int64
	// final makes the next checkpoint write every owed chunk at once and
	// record the batch's time as the mark: the last batch of a clean stop
	// (Close), after which no view comes, so the next start replays none.
	final atomic.Bool

	// Used by prepare alone (one batch at a time): the checkpoint in progress.
	cycle       []crdt.Key // owed chunks it still has to write
	cycleActive bool
	nextCycleMs int64   // when the next checkpoint may start
	cycleRate   float64 // chunks per ms it writes (sketchSpreadMs)
	cycleBudget float64 // chunks it may write now
	cycleLastMs int64   // the batch that last added to the budget
}

// sketchCheckpointEvery is how often a checkpoint of owed chunks starts.
// A crash replays the counted views of at most about this long plus a
// checkpoint's own length (at most about sketchSpreadMs) at start.
const sketchCheckpointEvery = 30_000 // ms

// A checkpoint writes its owed chunks at a pace, not as fast as batches
// come: sketchSliceMin in its first batch, then sketchSliceMin per
// sketchSlicePeriodMs, or its whole list over sketchSpreadMs if that is
// faster, and in any batch at least as many as grew in it, so that
// checkpoints keep up. A checkpoint after a burst of spread views has up to
// a chunk per view of it to write (640,000 after 10 s of batches over
// 10,000 videos): written in a few batches, they held those batches' views
// for seconds; at 512 a batch, every batch of the single views that came
// next carried 512 chunks, and they ran at a third of their rate for 5 s
// (issue 9: views at half of peak after the batch runs, p99 0.7–1.3 s). An
// idle node cuts batches for the checkpoint (startSweeps).
const (
	sketchSliceMin      = 512
	sketchSlicePeriodMs = 50
	sketchSpreadMs      = sketchCheckpointEvery / 2
)

type uniqueShard struct {
	mu sync.Mutex               // protects m and every field of its sketches marked "under shard.mu"
	m  map[string]*uniqueSketch // by video
}

// uniqueSketch is one video's registers, sparse while few are set. It
// exists only once at least one register is nonzero.
type uniqueSketch struct {
	// Under shard.mu.
	present uint64 // bit c: chunk c has a nonzero register
	queued  uint64 // bit c: chunk c is in the table's queue
	pending uint64 // bit c: chunk c has registers not durable yet; its shadow holds its durable ones
	owed    uint64 // bit c: chunk c has registers in no chunk entry (in counted events only); a checkpoint writes it
	force   uint64 // bit c: chunk c is written with the next batch
	// shadow holds the durable registers of each pending chunk, in chunk
	// order (shadowAt); nil when none is pending. A chunk becomes pending
	// with most views of a video seen rarely, so this is a short list of
	// pooled arrays, not a map made and dropped per view.
	shadow  []*[crdt.HLLChunkRegisters]uint8
	sparse  []uint32 // nonzero registers as index<<8 | value, sorted; nil once dense
	dense   *[crdt.HLLRegisters]uint8
	version uint64 // starts at 1, +1 whenever a register grows
	est     uint64 // the estimate at estVersion
	estVer  uint64 // version est was computed at; 0: never

	// estMu serialises recomputing est (hundreds of µs), so that readers
	// arriving while one runs share its result. Taken before shard.mu.
	estMu sync.Mutex
}

// regsPool recycles the 16 KiB arrays estimates are computed from.
var regsPool = sync.Pool{New: func() any { return new([crdt.HLLRegisters]uint8) }}

func newUniqueTable() *uniqueTable {
	t := &uniqueTable{seed: maphash.MakeSeed()}
	for i := range t.shards {
		t.shards[i].m = make(map[string]*uniqueSketch)
	}
	return t
}

func (t *uniqueTable) shard(video string) *uniqueShard {
	return &t.shards[maphash.String(t.seed, video)%uniqueShards]
}

// sketchLocked returns video's sketch, made if it has none. Callers hold s.mu.
func (s *uniqueShard) sketchLocked(video string) *uniqueSketch {
	sk := s.m[video]
	if sk == nil {
		sk = &uniqueSketch{version: 1}
		s.m[strings.Clone(video)] = sk // not pinning the caller's buffer
	}
	return sk
}

// insert adds user, a viewer of a counted local view ingested at ingestMs,
// to video's sketch. If a register grew, it queues that chunk's key for the
// next batch (unless already queued) and returns the key and true. The
// chunk is owed to a checkpoint, or written with the batch if it must be
// (see uniqueTable).
func (t *uniqueTable) insert(video, user string, ingestMs int64) (crdt.Key, bool) {
	c, off, rho := crdt.HLLPosition(user)
	force := !t.deferLocal || ingestMs < t.cycleStartMs.Load()
	s := t.shard(video)
	s.mu.Lock()
	sk := s.sketchLocked(video)
	grew := sk.raise(c, off, rho, true)
	var queue, owe bool
	if grew {
		queue = sk.grewLocked(c, true)
		owe = sk.oweLocked(c, force)
	}
	s.mu.Unlock()
	if !grew {
		return crdt.Key{}, false
	}
	k := crdt.UniqueKey(video, c)
	if queue {
		t.enqueue(k)
	}
	if owe {
		t.owed.push(k)
	}
	return k, true
}

// replay adds user, a viewer of a counted view read back from the event
// log at start, to video's sketch. The register is durable (its event is),
// so it is not pending, and not queued: its chunk is owed to a checkpoint.
func (t *uniqueTable) replay(video, user string) {
	c, off, rho := crdt.HLLPosition(user)
	s := t.shard(video)
	s.mu.Lock()
	sk := s.sketchLocked(video)
	owe := false
	if sk.raise(c, off, rho, false) {
		sk.grewLocked(c, false)
		owe = sk.oweLocked(c, false)
	}
	s.mu.Unlock()
	if owe {
		t.owed.push(crdt.UniqueKey(video, c))
	}
}

// oweLocked records that chunk c grew with registers in no chunk entry:
// with force, to be written with the next batch; else owed to a
// checkpoint. It reports whether c must join the list of owed chunks (it
// was not owed). Callers hold shard.mu.
func (sk *uniqueSketch) oweLocked(c int, force bool) bool {
	bit := uint64(1) << c
	if force {
		sk.force |= bit
		return false
	}
	if sk.owed&bit != 0 {
		return false
	}
	sk.owed |= bit
	return true
}

// merge folds a replicated chunk state into the table (register max) and
// queues the chunk if anything grew. An invalid key or state is refused with
// an error wrapping crdt.ErrBadHLL, and changes nothing.
func (t *uniqueTable) merge(k crdt.Key, st crdt.PNCounter) (changed bool, err error) {
	video, c, regs, err := parseChunk(k, st)
	if err != nil {
		return false, fmt.Errorf("merge unique-viewer chunk: %w", err)
	}
	return t.apply(video, c, &regs, true), nil
}

// load folds a chunk read from disk at start into the table, without queueing
// it (it is on disk already). An invalid key or state is refused with an
// error wrapping crdt.ErrBadHLL.
func (t *uniqueTable) load(k crdt.Key, st crdt.PNCounter) error {
	video, c, regs, err := parseChunk(k, st)
	if err != nil {
		return fmt.Errorf("load unique-viewer chunk: %w", err)
	}
	t.apply(video, c, &regs, false)
	return nil
}

// parseChunk checks that k names a sketch chunk and st is a chunk state.
func parseChunk(k crdt.Key, st crdt.PNCounter) (video string, chunk int, regs [crdt.HLLChunkRegisters]uint8, err error) {
	video, chunk, ok := crdt.ParseUniqueKey(k)
	if !ok {
		return "", 0, regs, fmt.Errorf("%w: key %q is not a chunk key", crdt.ErrBadHLL, k.String())
	}
	if err := crdt.ChunkFromState(st, &regs); err != nil {
		return "", 0, regs, fmt.Errorf("chunk %s: %w", k, err)
	}
	return video, chunk, regs, nil
}

// apply max-merges regs into chunk c of video's sketch, queueing the chunk
// if queue is set and a register grew; it reports whether one did.
func (t *uniqueTable) apply(video string, c int, regs *[crdt.HLLChunkRegisters]uint8, queue bool) bool {
	if *regs == ([crdt.HLLChunkRegisters]uint8{}) {
		return false // nothing to add; and a sketch must hold a register
	}
	s := t.shard(video)
	s.mu.Lock()
	sk := s.sketchLocked(video)
	grew := false
	for off, r := range regs {
		if r != 0 && sk.raise(c, off, r, queue) {
			grew = true
		}
	}
	enqueue := grew && sk.grewLocked(c, queue)
	if grew && queue {
		sk.oweLocked(c, true) // no local event records a replicated register
	}
	s.mu.Unlock()
	if enqueue {
		t.enqueue(crdt.UniqueKey(video, c))
	}
	return grew
}

// grewLocked records that chunk c grew. With queue set it marks the chunk
// queued and reports whether it must join the queue (it was not in it).
// Callers hold shard.mu.
func (sk *uniqueSketch) grewLocked(c int, queue bool) bool {
	bit := uint64(1) << c
	sk.present |= bit
	sk.version++
	if !queue || sk.queued&bit != 0 {
		return false
	}
	sk.queued |= bit
	return true
}

// raise raises register off of chunk c to at least r and reports whether it
// grew. With hold (a growth that is not on disk), a chunk without pending
// growth keeps its registers from before this one as its durable shadow.
// Callers hold shard.mu.
func (sk *uniqueSketch) raise(c, off int, r uint8, hold bool) bool {
	old, grew := sk.set(c*crdt.HLLChunkRegisters+off, r)
	if !grew || !hold {
		return grew
	}
	bit := uint64(1) << c
	if sk.pending&bit == 0 {
		regs := shadowPool.Get().(*[crdt.HLLChunkRegisters]uint8)
		if sk.present&bit != 0 {
			sk.chunk(c, regs)
			regs[off] = old // as it was before this growth
		} else {
			*regs = [crdt.HLLChunkRegisters]uint8{}
		}
		sk.shadow = slices.Insert(sk.shadow, sk.shadowAt(c), regs)
		sk.pending |= bit
	}
	return true
}

// shadowPool recycles the shadows of chunks no longer pending.
var shadowPool = sync.Pool{New: func() any { return new([crdt.HLLChunkRegisters]uint8) }}

// shadowAt is where chunk c's shadow is, or goes, in sk.shadow: after those
// of the pending chunks before c. Callers hold shard.mu.
func (sk *uniqueSketch) shadowAt(c int) int { return bits.OnesCount64(sk.pending & (1<<c - 1)) }

// set raises register i to at least r and reports its value before and
// whether it grew. Callers hold shard.mu.
func (sk *uniqueSketch) set(i int, r uint8) (old uint8, grew bool) {
	if sk.dense != nil {
		if old = sk.dense[i]; old >= r {
			return old, false
		}
		sk.dense[i] = r
		return old, true
	}
	e := uint32(i)<<8 | uint32(r)
	j, found := slices.BinarySearchFunc(sk.sparse, uint32(i), func(e, idx uint32) int { return cmp.Compare(e>>8, idx) })
	if found {
		if old = uint8(sk.sparse[j]); old >= r {
			return old, false
		}
		sk.sparse[j] = e
		return old, true
	}
	if len(sk.sparse) < uniqueSparseMax {
		sk.sparse = slices.Insert(sk.sparse, j, e)
		return 0, true
	}
	sk.dense = new([crdt.HLLRegisters]uint8)
	for _, e := range sk.sparse {
		sk.dense[e>>8] = uint8(e)
	}
	sk.sparse = nil
	sk.dense[i] = r
	return 0, true
}

// chunk copies chunk c's registers into dst. Callers hold shard.mu.
func (sk *uniqueSketch) chunk(c int, dst *[crdt.HLLChunkRegisters]uint8) {
	base := c * crdt.HLLChunkRegisters
	if sk.dense != nil {
		copy(dst[:], sk.dense[base:base+crdt.HLLChunkRegisters])
		return
	}
	*dst = [crdt.HLLChunkRegisters]uint8{}
	lo, _ := slices.BinarySearch(sk.sparse, uint32(base)<<8)
	for _, e := range sk.sparse[lo:] {
		i := int(e >> 8)
		if i >= base+crdt.HLLChunkRegisters {
			break
		}
		dst[i-base] = uint8(e)
	}
}

// all copies every register into dst. Callers hold shard.mu.
func (sk *uniqueSketch) all(dst *[crdt.HLLRegisters]uint8) {
	if sk.dense != nil {
		*dst = *sk.dense
		return
	}
	*dst = [crdt.HLLRegisters]uint8{}
	for _, e := range sk.sparse {
		dst[e>>8] = uint8(e)
	}
}

// state is the durable state of chunk k, what replication ships (the zero
// PNCounter if no register of it is durable, or k is not a chunk key): a
// fresh value the caller may keep.
func (t *uniqueTable) state(k crdt.Key) crdt.PNCounter {
	video, c, ok := crdt.ParseUniqueKey(k)
	if !ok {
		return crdt.PNCounter{}
	}
	var regs [crdt.HLLChunkRegisters]uint8
	s := t.shard(video)
	s.mu.Lock()
	sk := s.m[video]
	if sk == nil || sk.present&(1<<c) == 0 {
		s.mu.Unlock()
		return crdt.PNCounter{}
	}
	if sk.pending&(1<<c) != 0 {
		regs = *sk.shadow[sk.shadowAt(c)]
	} else {
		sk.chunk(c, &regs)
	}
	s.mu.Unlock()
	if regs == ([crdt.HLLChunkRegisters]uint8{}) {
		return crdt.PNCounter{} // nothing of it is durable yet
	}
	return crdt.ChunkState(&regs)
}

// estimate returns the estimated number of distinct viewers of video and
// whether the table holds any register of it. The estimate is cached per
// video and recomputed (crdt.EstimateHLL, hundreds of µs) only after a
// register grew; it reflects at least every register set before the call.
func (t *uniqueTable) estimate(video string) (uint64, bool) {
	s := t.shard(video)
	s.mu.Lock()
	sk := s.m[video]
	if sk == nil {
		s.mu.Unlock()
		return 0, false
	}
	if sk.estVer == sk.version {
		est := sk.est
		s.mu.Unlock()
		return est, true
	}
	arrived := sk.version
	s.mu.Unlock()

	// One recompute at a time per video: whoever waited here while another
	// ran takes its result if it covers what the waiter arrived to see.
	sk.estMu.Lock()
	defer sk.estMu.Unlock()
	s.mu.Lock()
	if sk.estVer >= arrived {
		est := sk.est
		s.mu.Unlock()
		return est, true
	}
	regs := regsPool.Get().(*[crdt.HLLRegisters]uint8)
	sk.all(regs)
	ver := sk.version
	s.mu.Unlock()

	est := crdt.EstimateHLL(regs)
	regsPool.Put(regs)

	s.mu.Lock()
	sk.est, sk.estVer = est, ver // ver only grows: estMu orders the recomputes
	s.mu.Unlock()
	return est, true
}

func (t *uniqueTable) enqueue(k crdt.Key) { t.queue.push(k) }

// chunkWrite is a chunk state handed to a batch.
type chunkWrite struct {
	key   crdt.Key
	regs  [crdt.HLLChunkRegisters]uint8
	wrote bool // the batch writes it (else its counted events are its record)
}

// sketchCheckpoint is what a batch wrote of a checkpoint: owed chunks, and
// whether it also recorded the checkpoint's mark (the last of them).
type sketchCheckpoint struct {
	keys []crdt.Key
	mark bool
}

// prepare is the sketches' part of the committer's Prepare hook: it takes
// every queued chunk's registers (once per chunk, however often it grew),
// for settle, and appends a mutation storing the state of those that must
// be written now (all of them without deferLocal), encoded straight from
// the registers by crdt.AppendChunkState. The hook then calls checkpoint. A
// chunk's encoding cannot fail, so the error is always nil; it is kept so
// that the Prepare hook handles every table alike.
//
// Chunks are written to their own entries, not to the counter log: a view
// grows one of its video's 64 chunks, so most chunks (all but a busy
// video's) change about once per log epoch, and logging one cost a log
// state and then a checkpoint write where its own entry costs one write
// (issue 9: batches over 10,000 videos went from 66k to 83k views/s).
func (t *uniqueTable) prepare(dst []store.Mutation) ([]store.Mutation, []chunkWrite, error) {
	queue := t.queue.take()
	written := make([]chunkWrite, 0, len(queue))
	for _, k := range queue {
		w := chunkWrite{key: k}
		var ok bool
		if ok, w.wrote = t.take(k, &w.regs); !ok {
			continue
		}
		if w.wrote {
			dst = append(dst, store.CounterValueMutation(k, crdt.AppendChunkState(nil, &w.regs)))
		}
		written = append(written, w)
	}
	return dst, written, nil
}

// checkpoint is the rest of the sketches' part of a batch, cut at nowMs by
// the node's clock: it starts a checkpoint if none runs and one is due
// (taking the list of owed chunks, and its start as the point before which
// a local view forces its chunk's write), and writes the next slice of the
// owed chunks the one in progress has left: what its pace allows since the
// last batch (sketchSliceMin), or grown (the chunks that grew in this
// batch, each owed at most once) if more. With the last slice it records
// its start as the sketch mark.
func (t *uniqueTable) checkpoint(dst []store.Mutation, nowMs int64, grown int) ([]store.Mutation, sketchCheckpoint) {
	var cp sketchCheckpoint
	if t.final.Load() {
		t.cycle = append(t.cycle, t.owed.take()...)
		t.cycleActive = true
		t.cycleStartMs.Store(nowMs)
		grown = len(t.cycle)
	}
	if !t.cycleActive {
		if nowMs < t.nextCycleMs {
			return dst, cp
		}
		t.cycle, t.cycleActive = t.owed.take(), true
		t.checkpointing.Store(true)
		t.cycleStartMs.Store(nowMs)
		t.nextCycleMs = nowMs + sketchCheckpointEvery
		t.nextCycle.Store(t.nextCycleMs)
		t.cycleRate = max(float64(len(t.cycle))/sketchSpreadMs, float64(sketchSliceMin)/sketchSlicePeriodMs)
		t.cycleBudget, t.cycleLastMs = sketchSliceMin, nowMs
	}
	if nowMs > t.cycleLastMs { // a clock that went back adds nothing
		t.cycleBudget += t.cycleRate * float64(nowMs-t.cycleLastMs)
		t.cycleLastMs = nowMs
	}
	n := min(len(t.cycle), max(int(t.cycleBudget), grown))
	t.cycleBudget = max(0, t.cycleBudget-float64(n))
	var regs [crdt.HLLChunkRegisters]uint8
	for _, k := range t.cycle[:n] {
		if t.takeOwed(k, &regs) {
			dst = append(dst, store.CounterValueMutation(k, crdt.AppendChunkState(nil, &regs)))
			cp.keys = append(cp.keys, k)
		}
	}
	t.cycle = t.cycle[n:]
	if len(t.cycle) == 0 {
		dst = append(dst, store.SketchMarkMutation(t.cycleStartMs.Load()))
		cp.mark = true
		t.cycle, t.cycleActive = nil, false
		t.checkpointing.Store(false)
	}
	return dst, cp
}

// owes reports whether a checkpoint is in progress, or chunks wait for one
// that is due at nowMs: then an idle node should cut batches (startSweeps).
func (t *uniqueTable) owes(nowMs int64) bool {
	return t.checkpointing.Load() || nowMs >= t.nextCycle.Load() && t.owed.len() > 0
}

// take clears chunk k's queued mark and copies its registers into dst; ok
// is false if k was not queued (a repeat, or not a chunk of this table).
// write reports that the chunk must be written now (forced); it is no
// longer owed then.
func (t *uniqueTable) take(k crdt.Key, dst *[crdt.HLLChunkRegisters]uint8) (ok, write bool) {
	ok = t.takeMarked(k, dst, func(sk *uniqueSketch, bit uint64) bool {
		if sk.queued&bit == 0 {
			return false
		}
		sk.queued &^= bit
		if write = sk.force&bit != 0; write {
			sk.force &^= bit
			sk.owed &^= bit
		}
		return true
	})
	return ok, write
}

// takeOwed clears chunk k's owed and forced marks and copies its registers
// into dst, for a checkpoint's write; it reports false if k is not owed (a
// forced write took it since).
func (t *uniqueTable) takeOwed(k crdt.Key, dst *[crdt.HLLChunkRegisters]uint8) bool {
	return t.takeMarked(k, dst, func(sk *uniqueSketch, bit uint64) bool {
		if sk.owed&bit == 0 {
			return false
		}
		sk.owed &^= bit
		sk.force &^= bit
		return true
	})
}

// takeMarked calls clear, under the shard's lock, with chunk k's sketch and
// bit, and if it reports that the chunk is to be taken, copies its
// registers into dst. It reports false for a key that names no chunk held.
func (t *uniqueTable) takeMarked(k crdt.Key, dst *[crdt.HLLChunkRegisters]uint8, clear func(sk *uniqueSketch, bit uint64) bool) bool {
	video, c, ok := crdt.ParseUniqueKey(k)
	if !ok {
		return false
	}
	s := t.shard(video)
	s.mu.Lock()
	defer s.mu.Unlock()
	sk := s.m[video]
	if sk == nil || !clear(sk, uint64(1)<<c) {
		return false
	}
	sk.chunk(c, dst)
	return true
}

// settle records that the batch holding written is durable: each chunk's
// written registers become its durable shadow, and a chunk that has not
// grown since is no longer pending (its live registers ship).
func (t *uniqueTable) settle(written []chunkWrite) {
	var live [crdt.HLLChunkRegisters]uint8
	for i := range written {
		w := &written[i]
		video, c, _ := crdt.ParseUniqueKey(w.key)
		s := t.shard(video)
		s.mu.Lock()
		sk := s.m[video]
		if sk != nil && sk.pending&(1<<c) != 0 {
			at := sk.shadowAt(c)
			sh := sk.shadow[at]
			for j, r := range w.regs {
				sh[j] = max(sh[j], r)
			}
			sk.chunk(c, &live)
			if live == *sh {
				sk.pending &^= 1 << c
				sk.shadow = slices.Delete(sk.shadow, at, at+1)
				if len(sk.shadow) == 0 {
					sk.shadow = nil // most sketches are rarely pending: no empty list per video
				}
				shadowPool.Put(sh)
			}
		}
		s.mu.Unlock()
	}
}

// requeue queues the chunks of a failed batch again, forced: the next
// batch writes them. Their registers include those of the failed batch's
// views, which are durable nowhere (their events failed with them), and
// could hide from the checkpoints the views that repeat them: a view that
// grows no register forces no write, and ingested before the checkpoint's
// start it would not be replayed either. Chunks already queued, and chunks
// the table does not hold, are skipped; they stay pending.
func (t *uniqueTable) requeue(written []chunkWrite) {
	for _, w := range written {
		video, c, ok := crdt.ParseUniqueKey(w.key)
		if !ok {
			continue
		}
		s := t.shard(video)
		s.mu.Lock()
		sk := s.m[video]
		queue := sk != nil && sk.present&(1<<c) != 0 && sk.queued&(1<<c) == 0
		if queue {
			sk.queued |= 1 << c
		}
		if sk != nil {
			sk.force |= 1 << c
		}
		s.mu.Unlock()
		if queue {
			t.enqueue(w.key)
		}
	}
}

// reowe queues the chunks a failed batch wrote for a checkpoint, forced:
// the next batch writes them (see requeue).
func (t *uniqueTable) reowe(cp sketchCheckpoint) {
	written := make([]chunkWrite, len(cp.keys))
	for i, k := range cp.keys {
		written[i] = chunkWrite{key: k}
	}
	t.requeue(written)
}

// keys returns the key of every chunk held, sorted by video then event (a
// deterministic order for the replication engine).
func (t *uniqueTable) keys() []crdt.Key {
	var out []crdt.Key
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		for video, sk := range s.m {
			for p := sk.present; p != 0; p &= p - 1 {
				out = append(out, crdt.UniqueKey(video, bits.TrailingZeros64(p)))
			}
		}
		s.mu.Unlock()
	}
	slices.SortFunc(out, func(a, b crdt.Key) int {
		return cmp.Or(cmp.Compare(a.Video, b.Video), cmp.Compare(a.Event, b.Event))
	})
	return out
}

// len returns how many videos have a sketch and how many chunks those hold.
func (t *uniqueTable) len() (videos, chunks int) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		videos += len(s.m)
		for _, sk := range s.m {
			chunks += bits.OnesCount64(sk.present)
		}
		s.mu.Unlock()
	}
	return videos, chunks
}

// sketchesInEvents reports whether chunks grown by local views may wait for
// a checkpoint, their counted events being their record until then: only
// if the event log outlives a checkpoint by far (an hour at least), so that
// a node that crashed finds the views to replay at start unless it stayed
// down about as long as the log keeps events. (Its peers hold every
// register it had made durable even then: registers replicate once their
// batch is durable.)
func sketchesInEvents(cfg Config) bool { return cfg.EventRetention >= time.Hour }

// replaySketches folds the counted views logged since the sketch mark into
// the sketches (their chunks may be in no entry: owed to the next
// checkpoint), and makes the mark the point before which a view forces its
// chunk's write. A store without a mark (new, or of format 5, whose chunks
// are all in their entries) gets nowMs as its mark.
func (n *Node) replaySketches(nowMs int64) error {
	mark, ok, err := n.store.SketchMark()
	if err != nil {
		return err
	}
	if !ok {
		if err := n.store.SetSketchMark(nowMs); err != nil {
			return err
		}
		mark = nowMs
	} else {
		start := time.Now()
		var views atomic.Int64
		err := n.store.ForEachEventParallel(mark, runtime.GOMAXPROCS(0), func(ev store.Event) error {
			if ev.Fate == store.FateCounted && ev.Event == EventView {
				n.uniques.replay(ev.Video, ev.User)
				views.Add(1)
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("replay counted views into unique-viewer sketches: %w", err)
		}
		n.log.Info("unique-viewer sketches replayed", "views", views.Load(), "since_ms", mark, "took", time.Since(start).Round(time.Millisecond))
	}
	n.uniques.cycleStartMs.Store(mark)
	return nil
}
