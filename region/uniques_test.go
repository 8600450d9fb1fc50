package region

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"testing"

	"pgregory.net/rapid"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// refSketches is the reference model of a uniqueTable: flat register arrays.
type refSketches map[string]*[crdt.HLLRegisters]uint8

func (r refSketches) regs(video string) *[crdt.HLLRegisters]uint8 {
	if r[video] == nil {
		r[video] = new([crdt.HLLRegisters]uint8)
	}
	return r[video]
}

// insert reports whether a register grew, and in which chunk.
func (r refSketches) insert(video, user string) (int, bool) {
	c, off, rho := crdt.HLLPosition(user)
	regs := r.regs(video)
	i := c*crdt.HLLChunkRegisters + off
	if regs[i] >= rho {
		return c, false
	}
	regs[i] = rho
	return c, true
}

func (r refSketches) merge(video string, c int, chunk *[crdt.HLLChunkRegisters]uint8) bool {
	regs := r.regs(video)
	grew := false
	for off, v := range chunk {
		if i := c*crdt.HLLChunkRegisters + off; v > regs[i] {
			regs[i], grew = v, true
		}
	}
	return grew
}

func refChunk(regs *[crdt.HLLRegisters]uint8, c int) *[crdt.HLLChunkRegisters]uint8 {
	return (*[crdt.HLLChunkRegisters]uint8)(regs[c*crdt.HLLChunkRegisters : (c+1)*crdt.HLLChunkRegisters])
}

// keys lists the nonzero chunks, in the order uniqueTable.keys promises.
func (r refSketches) keys() []crdt.Key {
	var out []crdt.Key
	for video, regs := range r {
		for c := range crdt.HLLChunks {
			if *refChunk(regs, c) != ([crdt.HLLChunkRegisters]uint8{}) {
				out = append(out, crdt.UniqueKey(video, c))
			}
		}
	}
	slices.SortFunc(out, func(a, b crdt.Key) int {
		return cmp.Or(cmp.Compare(a.Video, b.Video), cmp.Compare(a.Event, b.Event))
	})
	return out
}

// checkAgainst asserts that tab holds exactly the registers of ref.
func checkAgainst(t rapid.TB, tab *uniqueTable, ref refSketches) {
	t.Helper()
	wantVideos := 0
	for video, regs := range ref {
		est, ok := tab.estimate(video)
		want := crdt.EstimateHLL(regs)
		hasAny := *regs != ([crdt.HLLRegisters]uint8{})
		if hasAny {
			wantVideos++
		}
		if ok != hasAny || est != want {
			t.Fatalf("estimate(%q) = %d, %v; want %d, %v", video, est, ok, want, hasAny)
		}
		for c := range crdt.HLLChunks {
			k := crdt.UniqueKey(video, c)
			if got, want := liveState(tab, k), crdt.ChunkState(refChunk(regs, c)); !got.Equal(want) {
				t.Fatalf("registers of %v = %v, want %v", k, got, want)
			}
		}
	}
	keys := ref.keys()
	if got := tab.keys(); !slices.Equal(got, keys) {
		t.Fatalf("keys() = %v, want %v", got, keys)
	}
	if v, c := tab.len(); v != wantVideos || c != len(keys) {
		t.Fatalf("len() = %d videos, %d chunks; want %d, %d", v, c, wantVideos, len(keys))
	}
}

// userNames returns n distinct user IDs starting with prefix.
func userNames(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = prefix + strconv.Itoa(i)
	}
	return out
}

func TestUniqueInsertEstimate(t *testing.T) {
	tab := newUniqueTable()
	if est, ok := tab.estimate("v1"); ok || est != 0 {
		t.Fatalf("empty table: estimate %d, %v", est, ok)
	}
	ref := refSketches{}
	users := userNames("user-", 5000)
	for _, u := range users {
		k, grew := tab.insert("v1", u, 0)
		c, want := ref.insert("v1", u)
		if grew != want || (grew && k != crdt.UniqueKey("v1", c)) {
			t.Fatalf("insert(v1, %s) = %v, %v; want chunk %d, %v", u, k, grew, c, want)
		}
	}
	est, ok := tab.estimate("v1")
	if !ok || math.Abs(float64(est)-5000)/5000 > 3*crdt.HLLStdError {
		t.Fatalf("estimate of 5000 viewers = %d, %v", est, ok)
	}
	// Views by users already counted change nothing.
	for _, u := range users {
		if k, grew := tab.insert("v1", u, 0); grew {
			t.Fatalf("repeat insert of %s grew %v", u, k)
		}
	}
	if again, _ := tab.estimate("v1"); again != est {
		t.Fatalf("estimate moved from %d to %d on repeats", est, again)
	}
	tab.insert("v2", "someone", 0)
	if est, ok := tab.estimate("v2"); !ok || est != 1 {
		t.Fatalf("one viewer: estimate %d, %v", est, ok)
	}
	ref.insert("v2", "someone")
	checkAgainst(t, tab, ref)
}

func TestUniqueEstimateCache(t *testing.T) {
	tab := newUniqueTable()
	for _, u := range userNames("u", 100) {
		tab.insert("v", u, 0)
	}
	sk := tab.shard("v").m["v"]
	e1, _ := tab.estimate("v")
	if sk.estVer != sk.version {
		t.Fatalf("estimate not cached: version %d, cached at %d", sk.version, sk.estVer)
	}
	if n := testing.AllocsPerRun(100, func() { tab.estimate("v") }); n != 0 {
		t.Fatalf("cached estimate allocates %v times", n)
	}
	// A user who grows a register makes the next estimate recompute.
	var grown string
	for i := 0; grown == ""; i++ {
		if _, ok := tab.insert("v", "new-"+strconv.Itoa(i), 0); ok {
			grown = "new-" + strconv.Itoa(i)
		}
	}
	if sk.estVer == sk.version {
		t.Fatal("cache still marked fresh after a register grew")
	}
	e2, _ := tab.estimate("v")
	if sk.estVer != sk.version || e2 == e1 {
		t.Fatalf("estimate after growth: %d (was %d), cached at %d of %d", e2, e1, sk.estVer, sk.version)
	}
}

func TestUniqueSparseToDense(t *testing.T) {
	tab := newUniqueTable()
	ref := refSketches{}
	sk := func() *uniqueSketch { return tab.shard("v").m["v"] }
	for i := 0; ; i++ {
		u := "u" + strconv.Itoa(i)
		tab.insert("v", u, 0)
		ref.insert("v", u)
		if sk().dense != nil {
			break
		}
		if len(sk().sparse) > uniqueSparseMax {
			t.Fatalf("sparse list of %d registers", len(sk().sparse))
		}
	}
	if sk().sparse != nil {
		t.Fatal("dense sketch kept its sparse list")
	}
	checkAgainst(t, tab, ref)
}

// TestUniqueMatchesModel drives a table with random inserts, merges, loads and
// batches, across the sparse/dense switch, and compares it with flat arrays.
func TestUniqueMatchesModel(t *testing.T) {
	videos := []string{"a", "b", "c"}
	rapid.Check(t, func(t *rapid.T) {
		tab := newUniqueTable()
		ref := refSketches{}
		nops := rapid.IntRange(1, 30).Draw(t, "ops")
		for range nops {
			video := rapid.SampledFrom(videos).Draw(t, "video")
			switch rapid.IntRange(0, 4).Draw(t, "op") {
			case 0: // a few views
				for _, u := range rapid.SliceOfN(rapid.String(), 1, 10).Draw(t, "users") {
					k, grew := tab.insert(video, u, 0)
					c, want := ref.insert(video, u)
					if grew != want || (grew && k != crdt.UniqueKey(video, c)) {
						t.Fatalf("insert(%s, %q) = %v, %v; want chunk %d, %v", video, u, k, grew, c, want)
					}
				}
			case 1: // many views, crossing into the dense form
				n := rapid.IntRange(0, 3000).Draw(t, "n")
				for _, u := range userNames(rapid.StringMatching(`[a-z]{1,3}`).Draw(t, "prefix"), n) {
					tab.insert(video, u, 0)
					ref.insert(video, u)
				}
			case 2, 3: // a replicated chunk, or one loaded from disk
				c := rapid.IntRange(0, crdt.HLLChunks-1).Draw(t, "chunk")
				var regs [crdt.HLLChunkRegisters]uint8
				for range rapid.IntRange(0, 20).Draw(t, "set") {
					regs[rapid.IntRange(0, crdt.HLLChunkRegisters-1).Draw(t, "off")] = rapid.Uint8Range(1, crdt.HLLMaxRho).Draw(t, "rho")
				}
				k := crdt.UniqueKey(video, c)
				want := ref.merge(video, c, &regs)
				var changed bool
				var err error
				if rapid.Bool().Draw(t, "load") {
					err = tab.load(k, crdt.ChunkState(&regs))
					changed = want
				} else {
					changed, err = tab.merge(k, crdt.ChunkState(&regs))
				}
				if err != nil || changed != want {
					t.Fatalf("merge/load %v: changed %v, err %v; want %v", k, changed, err, want)
				}
			case 4: // a batch
				var dst []store.Mutation
				dst, written, err := tab.prepare(dst)
				if err != nil || len(dst) != len(written) {
					t.Fatalf("prepare: %d mutations, %d keys, %v", len(dst), len(written), err)
				}
				if rapid.Bool().Draw(t, "fail") {
					tab.requeue(written)
				}
			}
		}
		checkAgainst(t, tab, ref)
	})
}

// writeAll stands for a durable batch holding every queued chunk of tab.
func writeAll(tab *uniqueTable) {
	_, written, _ := tab.prepare(nil)
	tab.settle(written)
}

// exchange merges every chunk of from into to, in a shuffled order.
func exchange(t rapid.TB, from, to *uniqueTable, order func([]crdt.Key) []crdt.Key) {
	t.Helper()
	writeAll(from) // only what is durable ships
	for _, k := range order(from.keys()) {
		if _, err := to.merge(k, from.state(k)); err != nil {
			t.Fatalf("merge %v: %v", k, err)
		}
	}
}

func TestUniqueMergeConverges(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		// Three regions with overlapping audiences of different sizes (sparse
		// and dense sketches), for two videos.
		tabs := []*uniqueTable{newUniqueTable(), newUniqueTable(), newUniqueTable()}
		union := refSketches{}
		for i, tab := range tabs {
			for _, video := range []string{"v1", "v2"} {
				lo := rapid.IntRange(0, 5000).Draw(t, "lo")
				n := rapid.OneOf(rapid.IntRange(0, 50), rapid.IntRange(0, 4000)).Draw(t, "n")
				for j := lo; j < lo+n; j++ {
					u := "user-" + strconv.Itoa(j)
					tab.insert(video, u, 0)
					union.insert(video, u)
				}
				if i == 0 {
					union.regs(video) // an empty sketch in the model is "no sketch"
				}
			}
		}
		shuffle := func(keys []crdt.Key) []crdt.Key { return rapid.Permutation(keys).Draw(t, "order") }
		// Gossip in a random order of pairs until every pair has met both ways.
		pairs := [][2]int{{0, 1}, {1, 0}, {1, 2}, {2, 1}, {0, 2}, {2, 0}}
		for _, p := range rapid.Permutation(pairs).Draw(t, "pairs") {
			exchange(t, tabs[p[0]], tabs[p[1]], shuffle)
		}
		for _, p := range pairs {
			exchange(t, tabs[p[0]], tabs[p[1]], shuffle) // a second round: everyone has everything
		}
		for _, tab := range tabs {
			checkAgainst(t, tab, union)
		}
	})
}

// usersInChunk returns the first n user IDs prefix0, prefix1, ... whose
// sketch register is in chunk c.
func usersInChunk(prefix string, c, n int) []string {
	var out []string
	for i := 0; len(out) < n; i++ {
		u := prefix + strconv.Itoa(i)
		if uc, _, _ := crdt.HLLPosition(u); uc == c {
			out = append(out, u)
		}
	}
	return out
}

func TestUniquePrepareRequeue(t *testing.T) {
	tab := newUniqueTable()
	// Users that land in chunk 5 of v, several growing it.
	inChunk := usersInChunk("u", 5, 5)
	k5 := crdt.UniqueKey("v", 5)
	for _, u := range inChunk {
		if k, ok := tab.insert("v", u, 0); !ok || k != k5 {
			t.Fatalf("insert %s: %v, %v", u, k, ok)
		}
	}
	if len(tab.queue.keys) != 1 {
		t.Fatalf("queue holds %v after 5 growths of one chunk", tab.queue.keys)
	}
	dst := []store.Mutation{{Key: []byte("other")}}
	dst, written, err := tab.prepare(dst)
	if err != nil || !slices.Equal(writtenKeys(written), []crdt.Key{k5}) || len(dst) != 2 {
		t.Fatalf("prepare: %d mutations, keys %v, %v", len(dst), written, err)
	}
	checkMutation(t, dst[1], k5, liveState(tab, k5))

	if dst, written, _ := tab.prepare(nil); len(dst) != 0 || len(written) != 0 {
		t.Fatalf("second prepare wrote %v", written)
	}

	// A failed batch is requeued, once however often requeue is called.
	tab.requeue(written)
	tab.requeue(written)
	tab.requeue([]chunkWrite{{key: crdt.UniqueKey("v", 6)}, {key: crdt.UniqueKey("nobody", 1)}, {key: crdt.Key{Video: "v", Event: "view"}}})
	if !slices.Equal(tab.queue.keys, []crdt.Key{k5}) {
		t.Fatalf("queue after requeue: %v", tab.queue.keys)
	}
	// A growth while queued adds nothing to the queue; the batch writes the
	// newest state.
	var more string
	for i := 0; more == ""; i++ {
		u := "w" + strconv.Itoa(i)
		if c, _, _ := crdt.HLLPosition(u); c == 5 {
			if _, ok := tab.insert("v", u, 0); ok {
				more = u
			}
		}
	}
	if len(tab.queue.keys) != 1 {
		t.Fatalf("queue after growth of a queued chunk: %v", tab.queue.keys)
	}
	dst, written, err = tab.prepare(nil)
	if err != nil || !slices.Equal(writtenKeys(written), []crdt.Key{k5}) {
		t.Fatalf("prepare after requeue: %v, %v", written, err)
	}
	checkMutation(t, dst[0], k5, liveState(tab, k5))

	// Merges that change queue the chunk; merges that do not, and loads, do not.
	var regs [crdt.HLLChunkRegisters]uint8
	regs[3] = 40
	k9 := crdt.UniqueKey("v", 9)
	if err := tab.load(k9, crdt.ChunkState(&regs)); err != nil || len(tab.queue.keys) != 0 {
		t.Fatalf("load: %v, queue %v", err, tab.queue.keys)
	}
	if changed, err := tab.merge(k9, crdt.ChunkState(&regs)); changed || err != nil || len(tab.queue.keys) != 0 {
		t.Fatalf("merge of a known state: %v, %v, queue %v", changed, err, tab.queue.keys)
	}
	regs[4] = 2
	if changed, err := tab.merge(k9, crdt.ChunkState(&regs)); !changed || err != nil || !slices.Equal(tab.queue.keys, []crdt.Key{k9}) {
		t.Fatalf("merge of a new register: %v, %v, queue %v", changed, err, tab.queue.keys)
	}
	dst, written, _ = tab.prepare(nil)
	if !slices.Equal(writtenKeys(written), []crdt.Key{k9}) {
		t.Fatalf("prepare after merge wrote %v", written)
	}
	checkMutation(t, dst[0], k9, crdt.ChunkState(&regs))
}

func writtenKeys(ws []chunkWrite) []crdt.Key {
	var out []crdt.Key
	for _, w := range ws {
		out = append(out, w.key)
	}
	return out
}

// liveState is chunk k's registers including those not durable yet.
func liveState(tab *uniqueTable, k crdt.Key) crdt.PNCounter {
	video, c, _ := crdt.ParseUniqueKey(k)
	var regs [crdt.HLLChunkRegisters]uint8
	s := tab.shard(video)
	s.mu.Lock()
	if sk := s.m[video]; sk != nil {
		sk.chunk(c, &regs)
	}
	s.mu.Unlock()
	return crdt.ChunkState(&regs)
}

// TestUniqueStateShipsDurableOnly: the state replication ships holds only
// registers whose batch is durable (a register of a view lost in a crash
// must not reach a peer), through growth while a batch is in flight, a
// failed batch, and a peer's merge.
func TestUniqueStateShipsDurableOnly(t *testing.T) {
	tab := newUniqueTable()
	users := usersInChunk("u", 7, 4)
	k := crdt.UniqueKey("v", 7)
	grow := func(u string) {
		t.Helper()
		before := liveState(tab, k)
		tab.insert("v", u, 0)
		if liveState(tab, k).Equal(before) {
			t.Fatalf("insert %s did not grow chunk 7", u)
		}
	}
	grow(users[0])
	if st := tab.state(k); !st.Equal(crdt.PNCounter{}) {
		t.Fatalf("state before any batch: %v, want nothing", st)
	}
	_, w1, _ := tab.prepare(nil)
	first := liveState(tab, k)
	if st := tab.state(k); !st.Equal(crdt.PNCounter{}) {
		t.Fatalf("state while the batch is in flight: %v, want nothing", st)
	}
	// A growth while the batch is in flight, then the batch is durable: the
	// first write ships, not the growth.
	grewInFlight := false
	for _, u := range users[1:] {
		if _, ok := tab.insert("v", u, 0); ok {
			grewInFlight = true
			break
		}
	}
	if !grewInFlight {
		t.Fatal("no user grew chunk 7 while the batch was in flight")
	}
	tab.settle(w1)
	if st := tab.state(k); !st.Equal(first) {
		t.Fatalf("state after the first batch: %v, want %v", st, first)
	}
	// The next batch fails: still the first write ships.
	_, w2, _ := tab.prepare(nil)
	if len(w2) != 1 {
		t.Fatalf("second prepare wrote %v", writtenKeys(w2))
	}
	tab.requeue(w2)
	if st := tab.state(k); !st.Equal(first) {
		t.Fatalf("state after a failed batch: %v, want %v", st, first)
	}
	// Retried and durable: the live state ships.
	_, w3, _ := tab.prepare(nil)
	tab.settle(w3)
	if live, st := liveState(tab, k), tab.state(k); !st.Equal(live) {
		t.Fatalf("state after the retry is durable: %v, want %v", st, live)
	}
	// A peer's register ships once this node has written it.
	var regs [crdt.HLLChunkRegisters]uint8
	regs[200] = 50
	durable := tab.state(k)
	if changed, err := tab.merge(k, crdt.ChunkState(&regs)); !changed || err != nil {
		t.Fatalf("merge: %v, %v", changed, err)
	}
	if st := tab.state(k); !st.Equal(durable) {
		t.Fatalf("state after an unwritten merge: %v, want %v", st, durable)
	}
	_, w4, _ := tab.prepare(nil)
	tab.settle(w4)
	if live, st := liveState(tab, k), tab.state(k); !st.Equal(live) || st.Equal(durable) {
		t.Fatalf("state after the merge is durable: %v, want %v", st, live)
	}
}

func checkMutation(t *testing.T, m store.Mutation, k crdt.Key, want crdt.PNCounter) {
	t.Helper()
	if string(m.Key) != string(store.CounterKey(k)) || m.Delete || m.TTL != 0 {
		t.Fatalf("mutation for %v: key %q, delete %v, ttl %v", k, m.Key, m.Delete, m.TTL)
	}
	var got crdt.PNCounter
	if err := got.UnmarshalBinary(m.Value); err != nil {
		t.Fatalf("decode mutation of %v: %v", k, err)
	}
	if !got.Equal(want) {
		t.Fatalf("mutation of %v holds %v, want %v", k, got, want)
	}
}

func TestUniqueLoad(t *testing.T) {
	src := newUniqueTable()
	ref := refSketches{}
	for _, u := range userNames("u", 3000) {
		src.insert("big", u, 0)
		ref.insert("big", u)
	}
	for _, u := range userNames("x", 7) {
		src.insert("small", u, 0)
		ref.insert("small", u)
	}
	writeAll(src)
	tab := newUniqueTable()
	for _, k := range src.keys() {
		if err := tab.load(k, src.state(k)); err != nil {
			t.Fatalf("load %v: %v", k, err)
		}
	}
	if len(tab.queue.keys) != 0 {
		t.Fatalf("load queued %d chunks", len(tab.queue.keys))
	}
	checkAgainst(t, tab, ref)
	// Loading the same chunks again is harmless (register max).
	for _, k := range src.keys() {
		if err := tab.load(k, src.state(k)); err != nil {
			t.Fatalf("reload %v: %v", k, err)
		}
	}
	checkAgainst(t, tab, ref)
}

func TestUniqueRejects(t *testing.T) {
	var good [crdt.HLLChunkRegisters]uint8
	good[1] = 3
	goodState := crdt.ChunkState(&good)
	var counter crdt.PNCounter
	counter.Increment(1, 5, 1_700_000_000_000)
	cases := []struct {
		name string
		k    crdt.Key
		st   crdt.PNCounter
	}{
		{"counter key", crdt.Key{Video: "v", Event: "view"}, goodState},
		{"claim key", crdt.ClaimKey{Video: "v", User: "u", Window: 1}.Key(), goodState},
		{"chunk 64", crdt.Key{Video: "v", Event: "~uv/64"}, goodState},
		{"chunk 07", crdt.Key{Video: "v", Event: "~uv/07"}, goodState},
		{"counter state", crdt.UniqueKey("v", 1), counter},
		{"N slot", crdt.UniqueKey("v", 1), crdt.PNCounter{P: goodState.P, N: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 1})}},
		{"register too high", crdt.UniqueKey("v", 1), crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: crdt.HLLMaxRho + 1})}},
		{"offset too high", crdt.UniqueKey("v", 1), crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 256, Count: 1})}},
		{"time", crdt.UniqueKey("v", 1), crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 1, Updated: 5})}},
	}
	tab := newUniqueTable()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			changed, err := tab.merge(tc.k, tc.st)
			if changed || !errors.Is(err, crdt.ErrBadHLL) {
				t.Fatalf("merge: changed %v, err %v; want ErrBadHLL", changed, err)
			}
			if err := tab.load(tc.k, tc.st); !errors.Is(err, crdt.ErrBadHLL) {
				t.Fatalf("load: err %v; want ErrBadHLL", err)
			}
			t.Logf("refused: %v", err)
		})
	}
	// The zero state is valid and adds nothing: no sketch appears.
	if changed, err := tab.merge(crdt.UniqueKey("v", 1), crdt.PNCounter{}); changed || err != nil {
		t.Fatalf("zero state: %v, %v", changed, err)
	}
	if v, c := tab.len(); v != 0 || c != 0 || len(tab.queue.keys) != 0 {
		t.Fatalf("refused merges left %d videos, %d chunks, queue %v", v, c, tab.queue.keys)
	}
	if _, ok := tab.estimate("v"); ok {
		t.Fatal("refused merges made a sketch")
	}
	if st := tab.state(crdt.Key{Video: "v", Event: "view"}); !st.IsZero() {
		t.Fatalf("state of a counter key: %v", st)
	}
}

// TestUniqueConcurrent runs inserts, merges, batches and reads at once (run
// with -race). Afterwards the table must equal the sequential model, and the
// last state each chunk was written with must be its final state: no growth
// is lost between the queue and a batch.
func TestUniqueConcurrent(t *testing.T) {
	const writers, perWriter = 4, 3000
	videos := []string{"hot", "v1", "v2", "v3"}
	tab := newUniqueTable()
	ref := refSketches{}
	remote := newUniqueTable()
	for _, u := range userNames("remote-", 2000) {
		remote.insert("hot", u, 0)
		ref.insert("hot", u)
	}
	writeAll(remote)
	for w := range writers {
		for i := range perWriter {
			ref.insert(videos[i%len(videos)], "u"+strconv.Itoa(i*writers/2+w)) // writers overlap
		}
	}

	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range perWriter {
				tab.insert(videos[i%len(videos)], "u"+strconv.Itoa(i*writers/2+w), 0)
			}
		})
	}
	wg.Go(func() {
		for _, k := range remote.keys() {
			if _, err := tab.merge(k, remote.state(k)); err != nil {
				t.Errorf("merge %v: %v", k, err)
			}
		}
	})
	stop := make(chan struct{})
	readers := sync.WaitGroup{}
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, v := range videos {
				tab.estimate(v)
			}
			tab.state(crdt.UniqueKey("hot", 3))
			tab.len()
		}
	})
	last := map[crdt.Key][]byte{}
	batch := func() {
		dst, written, err := tab.prepare(nil)
		if err != nil {
			t.Errorf("prepare: %v", err)
		}
		for i, w := range written {
			last[w.key] = dst[i].Value
		}
		tab.settle(written)
	}
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			batch()
			if keys := tab.keys(); len(keys) > 0 && len(last)%3 == 0 {
				tab.requeue([]chunkWrite{{key: keys[0]}}) // now and then a "failed" batch
			}
			runtime.Gosched()
		}
	})
	wg.Wait()
	close(stop)
	readers.Wait()
	batch()

	checkAgainst(t, tab, ref)
	for _, k := range tab.keys() {
		var got crdt.PNCounter
		if err := got.UnmarshalBinary(last[k]); err != nil {
			t.Fatalf("%v never written: %v", k, err)
		}
		if want := tab.state(k); !got.Equal(want) {
			t.Fatalf("%v last written as %v, final state %v", k, got, want)
		}
	}
}

// BenchmarkUniqueMemory reports the heap one video's sketch costs (B/video:
// registers, index, table entry and video ID) at 1, 100, 10k and 1M distinct
// viewers. Run with -benchtime=1x.
func BenchmarkUniqueMemory(b *testing.B) {
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	for _, tc := range []struct{ viewers, videos int }{
		{1, 100_000}, {100, 10_000}, {10_000, 100}, {1_000_000, 4},
	} {
		b.Run(fmt.Sprintf("viewers=%d", tc.viewers), func(b *testing.B) {
			users := userNames("user-", tc.viewers)
			names := make([]string, tc.videos)
			for i := range names {
				names[i] = fmt.Sprintf("video-%06d", i)
			}
			for range b.N {
				base := heap()
				tab := newUniqueTable()
				for i, v := range names {
					for _, u := range users {
						tab.insert(v, u+"@"+v, 0) // each video its own audience
					}
					if i%1000 == 999 {
						writeAll(tab) // the batches a node cuts meanwhile
					}
				}
				writeAll(tab)
				bytes := heap() - base
				b.ReportMetric(float64(bytes)/float64(tc.videos), "B/video")
				runtime.KeepAlive(tab)
			}
		})
	}
}

// BenchmarkUniqueInsert measures insert alone: the queue it feeds holds each
// chunk at most once, so it stays bounded without batches
// (BenchmarkUniquePrepare measures those).
func BenchmarkUniqueInsert(b *testing.B) {
	users := userNames("user-", 1<<16)
	b.Run("new-users-1k-videos", func(b *testing.B) {
		tab := newUniqueTable()
		videos := userNames("video-", 1024)
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			tab.insert(videos[i%len(videos)], users[(i/len(videos))%len(users)], 0)
		}
	})
	b.Run("hot-video", func(b *testing.B) {
		tab := newUniqueTable()
		b.ReportAllocs()
		for i := 0; b.Loop(); i++ {
			tab.insert("hot", users[i%len(users)], 0)
		}
	})
	b.Run("hot-video-parallel", func(b *testing.B) {
		tab := newUniqueTable()
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for i := 0; pb.Next(); i++ {
				tab.insert("hot", users[i%len(users)], 0)
			}
		})
	})
}

// BenchmarkUniquePrepare measures writing one changed chunk into a batch
// (ns/chunk), for chunks of a 1,000-viewer and of a 1M-viewer sketch.
func BenchmarkUniquePrepare(b *testing.B) {
	for _, n := range []int{1_000, 1_000_000} {
		b.Run(fmt.Sprintf("viewers=%d", n), func(b *testing.B) {
			tab := newUniqueTable()
			for _, u := range userNames("user-", n) {
				tab.insert("v", u, 0)
			}
			keys := tab.keys()
			writes := make([]chunkWrite, len(keys))
			for i, k := range keys {
				writes[i].key = k
			}
			var dst []store.Mutation
			b.ReportAllocs()
			for b.Loop() {
				tab.requeue(writes)
				var written []chunkWrite
				dst, written, _ = tab.prepare(dst[:0])
				tab.settle(written)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(keys)), "ns/chunk")
		})
	}
}

func BenchmarkUniqueEstimate(b *testing.B) {
	for _, n := range []int{100, 1_000_000} {
		tab := newUniqueTable()
		for _, u := range userNames("user-", n) {
			tab.insert("v", u, 0)
		}
		sk := tab.shard("v").m["v"]
		b.Run(fmt.Sprintf("viewers=%d/cached", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				tab.estimate("v")
			}
		})
		b.Run(fmt.Sprintf("viewers=%d/after-change", n), func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				s := tab.shard("v")
				s.mu.Lock()
				sk.version++ // as if a register grew
				s.mu.Unlock()
				tab.estimate("v")
			}
		})
	}
}

// TestUniqueCheckpointsRecoverDurable: with chunk writes deferred to
// checkpoints, whatever batches are cut, fail or succeed, however the
// clock moves (views ingested late, before a checkpoint started), a crash
// at any point recovers every durable register: the chunks written by
// successful batches, and the counted views of successful batches ingested
// since the last recorded mark replayed into them, hold every register of
// every view and replicated chunk a successful batch made durable.
func TestUniqueCheckpointsRecoverDurable(t *testing.T) {
	videos := []string{"a", "b", "c"}
	type view struct {
		video, user string
		at          int64
	}
	type chunk struct {
		video string
		c     int
		regs  [crdt.HLLChunkRegisters]uint8
	}
	rapid.Check(t, func(t *rapid.T) {
		tab := newUniqueTable()
		tab.deferLocal = true
		var nowMs, mark int64 // the node's clock; the last mark a successful batch recorded
		stored := map[crdt.Key][crdt.HLLChunkRegisters]uint8{}
		var pendingViews, durableViews []view
		var pendingChunks, durableChunks []chunk
		for range rapid.IntRange(1, 40).Draw(t, "ops") {
			video := rapid.SampledFrom(videos).Draw(t, "video")
			switch rapid.IntRange(0, 3).Draw(t, "op") {
			case 0, 1: // views, ingested now or a while ago (the clock went back)
				at := nowMs
				if rapid.Bool().Draw(t, "late") {
					at -= rapid.Int64Range(1, 60_000).Draw(t, "back")
				}
				for _, u := range userNames(rapid.StringMatching(`[a-z]{1,3}`).Draw(t, "prefix"), rapid.IntRange(1, 200).Draw(t, "n")) {
					tab.insert(video, u, at)
					pendingViews = append(pendingViews, view{video, u, at})
				}
			case 2: // a replicated chunk
				ch := chunk{video: video, c: rapid.IntRange(0, crdt.HLLChunks-1).Draw(t, "chunk")}
				for range rapid.IntRange(1, 20).Draw(t, "set") {
					ch.regs[rapid.IntRange(0, crdt.HLLChunkRegisters-1).Draw(t, "off")] = rapid.Uint8Range(1, crdt.HLLMaxRho).Draw(t, "rho")
				}
				if _, err := tab.merge(crdt.UniqueKey(video, ch.c), crdt.ChunkState(&ch.regs)); err != nil {
					t.Fatal(err)
				}
				pendingChunks = append(pendingChunks, ch)
			case 3: // a batch, cut at nowMs
				_, written, _ := tab.prepare(nil)
				_, cp := tab.checkpoint(nil, nowMs, len(written))
				if rapid.Bool().Draw(t, "fail") {
					tab.requeue(written)
					tab.reowe(cp)
					pendingViews, pendingChunks = nil, nil // never acknowledged
				} else {
					tab.settle(written)
					put := func(k crdt.Key, regs *[crdt.HLLChunkRegisters]uint8) {
						s := stored[k]
						for j, r := range regs {
							s[j] = max(s[j], r)
						}
						stored[k] = s
					}
					for _, w := range written {
						if w.wrote {
							put(w.key, &w.regs)
						}
					}
					for _, k := range cp.keys { // written as they were at the cut
						put(k, liveRegs(tab, k))
					}
					if cp.mark {
						mark = tab.cycleStartMs.Load()
					}
					durableViews = append(durableViews, pendingViews...)
					durableChunks = append(durableChunks, pendingChunks...)
					pendingViews, pendingChunks = nil, nil
				}
				nowMs += rapid.Int64Range(0, 40_000).Draw(t, "elapse")
			}
			// A crash now: what a restart recovers, against what was durable.
			durable, recovered := refSketches{}, refSketches{}
			for _, v := range durableViews {
				durable.insert(v.video, v.user)
				if v.at >= mark {
					recovered.insert(v.video, v.user)
				}
			}
			for _, ch := range durableChunks {
				durable.merge(ch.video, ch.c, &ch.regs)
			}
			for k, regs := range stored {
				video, c, _ := crdt.ParseUniqueKey(k)
				recovered.merge(video, c, &regs)
			}
			for video, regs := range durable {
				got := recovered.regs(video)
				for i, r := range regs {
					if got[i] < r {
						t.Fatalf("video %s register %d: %d recovered, %d durable (mark %d, now %d)", video, i, got[i], r, mark, nowMs)
					}
				}
			}
		}
	})
}

// liveRegs is chunk k's registers in tab now.
func liveRegs(tab *uniqueTable, k crdt.Key) *[crdt.HLLChunkRegisters]uint8 {
	video, c, _ := crdt.ParseUniqueKey(k)
	s := tab.shard(video)
	s.mu.Lock()
	defer s.mu.Unlock()
	var regs [crdt.HLLChunkRegisters]uint8
	if sk := s.m[video]; sk != nil {
		sk.chunk(c, &regs)
	}
	return &regs
}
