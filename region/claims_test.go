package region

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// fakeBatches stands in for the committer's Done: batch 7 is not final
// until its channel is closed.
type fakeBatches struct{ ch chan struct{} }

func (f *fakeBatches) done(seq uint64) <-chan struct{} {
	if seq == 7 && !isClosed(f.ch) {
		return f.ch
	}
	return nil
}

func TestClaimTableConcurrentOneWinner(t *testing.T) {
	tab := newClaimTable(1000, 500)
	batch := &fakeBatches{ch: make(chan struct{})} // the winner's batch, not durable yet
	tab.done = batch.done
	k := store.ClaimKey{Video: "v", User: "u", Window: 11}
	const g = 32
	won := make([]bool, g)
	synced := make([]<-chan struct{}, g)
	var wg sync.WaitGroup
	for i := range g {
		wg.Go(func() { won[i], synced[i] = tab.claimLocal(k, 1, int64(i), 7) })
	}
	wg.Wait()
	winners := 0
	for i := range g {
		if won[i] {
			winners++
			continue
		}
		if synced[i] == nil || isClosed(synced[i]) {
			t.Fatalf("repeat %d does not wait for the unsynced winner", i)
		}
	}
	if winners != 1 {
		t.Fatalf("%d winners, want 1", winners)
	}
	close(batch.ch) // the batch is durable
	if w, ch := tab.claimLocal(k, 1, 99, 0); w || ch != nil {
		t.Fatalf("after the batch: won %v, wait %v; want a plain duplicate", w, ch)
	}
	if got := len(tab.fresh.keys); got != 1 || len(tab.queue.keys) != 0 {
		t.Errorf("%d fresh claims and %d other sets queued, want the one claim", got, len(tab.queue.keys))
	}
}

// TestClaimTableMergeKeepsUnsynced: a peer's claim set merged into a claim
// this node won keeps repeats waiting for the winner's batch.
func TestClaimTableMergeKeepsUnsynced(t *testing.T) {
	tab := newClaimTable(1000, 500)
	batch := &fakeBatches{ch: make(chan struct{})}
	tab.done = batch.done
	k := store.ClaimKey{Video: "v", User: "u", Window: 11}
	if won, _ := tab.claimLocal(k, 2, 11_500, 7); !won {
		t.Fatal("first claim lost")
	}
	if r := tab.merge(k, crdt.NewClaims(1, 11_600), []crdt.ReplicaID{2}); !r.changed || len(r.owed) != 0 {
		t.Fatalf("merge of a later peer claim: %+v, want a change and nothing owed", r)
	}
	if c, ok := tab.get(k); !ok || c.Len() != 2 {
		t.Fatalf("merged set %v, %v; want both claims", c, ok)
	}
	if _, ch := tab.claimLocal(k, 2, 11_700, 0); ch == nil || isClosed(ch) {
		t.Fatal("a repeat after the merge does not wait for the unsynced winner")
	}
	close(batch.ch)
	if _, ch := tab.claimLocal(k, 2, 11_800, 0); ch != nil {
		t.Fatal("a repeat after the batch still waits")
	}
}

// TestClaimTableMerge: a remote claim blocks a later local view; a remote
// claim that beats ours asks for one compensation, and only one.
func TestClaimTableMerge(t *testing.T) {
	const self, peer = crdt.ReplicaID(2), crdt.ReplicaID(1)
	own := []crdt.ReplicaID{self}
	tab := newClaimTable(1000, 500)
	k1 := store.ClaimKey{Video: "v", User: "u1", Window: 3}
	r := tab.merge(k1, crdt.NewClaims(peer, 3100), own)
	if !r.changed || len(r.owed) != 0 || !r.adopted {
		t.Fatalf("first remote claim: %+v", r)
	}
	if won, _ := tab.claimLocal(k1, self, 3200, 0); won {
		t.Fatal("a view claimed by a peer was counted again here")
	}

	k2 := store.ClaimKey{Video: "v", User: "u2", Window: 3}
	if won, _ := tab.claimLocal(k2, self, 3500, 0); !won {
		t.Fatal("fresh claim refused")
	}
	later := tab.merge(k2, crdt.NewClaims(peer, 3600), own)
	if !later.changed || len(later.owed) != 0 || later.adopted {
		t.Fatalf("a later remote claim: %+v (ours wins; the peer compensates)", later)
	}
	earlier := tab.merge(k2, crdt.NewClaims(3, 3400), own)
	if !earlier.changed || !slices.Equal(earlier.owed, []int64{3500}) {
		t.Fatalf("an earlier remote claim: %+v, want a compensation", earlier)
	}
	again := tab.merge(k2, crdt.NewClaims(3, 3400), own)
	if again.changed || len(again.owed) != 0 {
		t.Fatalf("the same claim again: %+v, want nothing", again)
	}
	c, _ := tab.get(k2)
	if c.Stage(self) != crdt.StageCompensated || c.Len() != 3 {
		t.Fatalf("claims %v", c)
	}

	// A claim made under a retired ID of this node is settled too, by its
	// successor, as is the current ID's own losing claim in the same set.
	const retired = crdt.ReplicaID(7)
	k3 := store.ClaimKey{Video: "v", User: "u3", Window: 3}
	tab.load(k3, crdt.NewClaims(retired, 3300))
	both := crdt.NewClaims(retired, 3300)
	both.Merge(crdt.NewClaims(self, 3350))
	both.Merge(crdt.NewClaims(peer, 3200))
	r3 := tab.merge(k3, both, []crdt.ReplicaID{self, retired})
	if !r3.changed || !slices.Equal(r3.owed, []int64{3350, 3300}) {
		t.Fatalf("a peer's earlier claim against ours under two IDs: %+v, want both compensated", r3)
	}
	c, _ = tab.get(k3)
	if c.Stage(self) != crdt.StageCompensated || c.Stage(retired) != crdt.StageCompensated || c.Stage(peer) != crdt.StageClaimed {
		t.Fatalf("claims %v", c)
	}
}

// TestClaimBlocksRoundTrip: claims this node won alone go into one claim
// block per window, other sets on their own; reading the store back (as Open
// does) gives every set whole, a key in a block and on its own merged.
func TestClaimBlocksRoundTrip(t *testing.T) {
	const self, peer = crdt.ReplicaID(1), crdt.ReplicaID(2)
	st, err := store.Open(store.InMemoryOptions())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	// Hour-long windows: what is written lives for minutes (Badger's TTLs
	// have a granularity of seconds).
	tab := newClaimTable(3_600_000, 500)
	var keys []store.ClaimKey
	for i := range 100 {
		k := store.ClaimKey{Video: fmt.Sprint("video-", i%7), User: fmt.Sprint("user-", i), Window: 3 + uint64(i%2)}
		if i%10 == 0 {
			k.Event = "share"
		}
		if won, _ := tab.claimLocal(k, self, int64(3*3_600_000+i), 0); !won {
			t.Fatalf("claim %v refused", k)
		}
		keys = append(keys, k)
	}
	// One set also holds a peer's later claim: written on its own.
	tab.merge(keys[5], crdt.NewClaims(peer, 9999), []crdt.ReplicaID{self})
	seq := uint64(0)
	muts, written, err := tab.prepare(nil, 3*3_600_000+500, self, func() uint64 { seq++; return seq })
	// The set merged after its claim was won is written both ways.
	distinct := make(map[store.ClaimKey]bool)
	for _, k := range written {
		distinct[k] = true
	}
	if err != nil || len(distinct) != 100 || len(written) != 101 {
		t.Fatalf("prepare: %d written (%d keys), %v", len(written), len(distinct), err)
	}
	if len(muts) > 10 {
		t.Fatalf("%d mutations for 100 claims: want them in blocks", len(muts))
	}
	// Then a peer's claim reaches a set already in a block: written alone.
	tab.merge(keys[6], crdt.NewClaims(peer, 9999), []crdt.ReplicaID{self})
	more, _, _ := tab.prepare(nil, 3*3_600_000+600, self, func() uint64 { seq++; return seq })
	if len(more) != 1 {
		t.Fatalf("a changed set: %d mutations, want 1", len(more))
	}
	c := store.NewCommitter(st, store.CommitterConfig{})
	tk, err := c.Submit(append(muts, more...)...)
	if err == nil {
		err = tk.Wait(context.Background())
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	back := newClaimTable(3_600_000, 500)
	maxSeq, err := st.ForEachClaim(func(k store.ClaimKey, c crdt.Claims) error { back.load(k, c); return nil })
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		want, _ := tab.get(k)
		if got, ok := back.get(k); !ok || !got.Equal(want) {
			t.Fatalf("%v read back as %v, %v; want %v", k, got, ok, want)
		}
	}
	if back.len() != 100 {
		t.Fatalf("%d sets read back, want 100", back.len())
	}
	if maxSeq == 0 || maxSeq > seq {
		t.Fatalf("ForEachClaim's largest block sequence = %d; want the last block's (≤ %d)", maxSeq, seq)
	}
}

func TestClaimTablePrepareAndExpire(t *testing.T) {
	tab := newClaimTable(1000, 500) // window w expires at (w+1)*1000+500
	k3 := store.ClaimKey{Video: "v", User: "u", Window: 3}
	k4 := store.ClaimKey{Video: "v", User: "u", Window: 4}
	tab.claimLocal(k3, 1, 3100, 0)
	tab.claimLocal(k4, 1, 4100, 0)
	seq := uint64(0)
	next := func() uint64 { seq++; return seq }
	muts, written, err := tab.prepare(nil, 4400, 1, next)
	if err != nil || len(muts) != 2 || len(written) != 2 {
		t.Fatalf("prepare: %d mutations, %v, %v", len(muts), written, err)
	}
	if muts[0].TTL != msDuration(4500-4400) || muts[1].TTL != msDuration(5500-4400) {
		t.Errorf("TTLs %v, %v: want to the end of the window plus the lag budget", muts[0].TTL, muts[1].TTL)
	}
	tab.requeue(written)
	if muts, _, _ := tab.prepare(nil, 4600, 1, next); len(muts) != 1 {
		t.Errorf("after window 3 expired, prepare wrote %d claims, want 1", len(muts))
	}
	if n := tab.expire(4499); n != 0 {
		t.Errorf("expire before the end dropped %d", n)
	}
	if n := tab.expire(4500); n != 1 || tab.len() != 1 {
		t.Errorf("expire at window 3's end dropped %d, %d left; want 1, 1", n, tab.len())
	}
	if _, ok := tab.get(k3); ok {
		t.Error("expired claim still answers")
	}
}
