package region

import (
	"errors"
	"fmt"
	"testing"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// TestCounterLogCrash: counters written through the counter log over many
// epochs, every one of them logged again in each epoch (so that draining an
// epoch skips them: TestCounterLogSkipsKeysLoggedAgain), keep the log
// bounded (checkpointed and deleted as it goes), and a node that dies
// without closing (its last batches durable, nothing checkpointed since)
// comes back with every count, bucket and sketch exact.
func TestCounterLogCrash(t *testing.T) {
	st, clock, cfg := crashConfig(t)
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	n.counters.log.epochRecords = 512 // an epoch in every few rounds
	const videos, rounds = 1000, 58
	maxRecords, lastRecords, checkpoints := 0, 0, 0
	for r := range rounds {
		views := make([]View, videos)
		for i := range views {
			views[i] = View{Video: fmt.Sprintf("v%d", i), User: fmt.Sprintf("u%d-%d", r, i)}
		}
		p, err := n.SubmitViews(views)
		if err != nil {
			t.Fatal(err)
		}
		for n.StepCommit() {
		}
		if done, err := p.Done(); !done || err != nil {
			t.Fatalf("round %d: done %v, %v", r, done, err)
		}
		recs, err := st.CounterLogRecords()
		if err != nil {
			t.Fatal(err)
		}
		maxRecords = max(maxRecords, recs)
		if recs < lastRecords {
			checkpoints++
		}
		lastRecords = recs
	}
	if checkpoints < 2 || lastRecords == 0 {
		t.Fatalf("%d checkpoints, %d records left: want an epoch checkpointed more than once and a log to replay", checkpoints, lastRecords)
	}
	if limit := 3 * n.counters.log.epochRecords; maxRecords > limit {
		t.Errorf("the log reached %d records, want at most %d (checkpoints keep it bounded)", maxRecords, limit)
	}
	// Crash: n is abandoned, its log not checkpointed.
	n2, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer n2.Close()
	if recs, _ := st.CounterLogRecords(); recs != 0 {
		t.Errorf("%d log records after Open, want the log replayed and gone", recs)
	}
	nowMs := clock.Now().UnixMilli()
	// The sketches came back whole too (their chunks have their own entries).
	want, err := n.UniqueViewers("v7")
	if err != nil || want < rounds*9/10 || want > rounds*11/10 {
		t.Fatalf("unique viewers of v7 before the crash: %d, %v; want about %d", want, err, rounds)
	}
	if got, err := n2.UniqueViewers("v7"); err != nil || got != want {
		t.Fatalf("unique viewers of v7 after the crash: %d, %v; want %d as before", got, err, want)
	}
	for i := range videos {
		v := fmt.Sprintf("v%d", i)
		c, ok, err := st.Counter(crdt.Key{Video: v, Event: EventView})
		if err != nil || !ok || c.Value() != rounds {
			t.Fatalf("%s on disk after the crash: %v %v %v, want %d", v, c.Value(), ok, err, rounds)
		}
		if got, err := n2.Views(v); err != nil || got.Value != rounds {
			t.Fatalf("%s after the crash: %+v %v, want %d", v, got, err, rounds)
		}
		for _, b := range crdt.BucketsOf(v, EventView, nowMs) {
			c, ok, err := st.Counter(b.Key())
			if err != nil || !ok || c.Value() != rounds {
				t.Fatalf("bucket %s after the crash: %v %v %v, want %d", b.Key(), c.Value(), ok, err, rounds)
			}
		}
	}
}

// failingKey is a loggedKey whose checkpoint fails while fail is set.
type failingKey struct {
	fail  *bool
	epoch uint8
}

func (k *failingKey) checkpoint(int64) (store.Mutation, bool, error) {
	if *k.fail {
		return store.Mutation{}, false, fmt.Errorf("checkpoint refused")
	}
	return store.Mutation{Key: []byte("c-key"), Value: []byte{0x92, 0x90, 0x90}}, true, nil
}

func (*failingKey) setLogged(bool) {}

func (k *failingKey) logEpoch() uint8 { return k.epoch }

func (k *failingKey) setLogEpoch(v uint8) { k.epoch = v }

// TestCounterLogCheckpointFailure: a key whose checkpoint failed stays to
// be checkpointed, and its epoch's records are deleted only after it was,
// durably.
func TestCounterLogCheckpointFailure(t *testing.T) {
	l := newCounterLog(func() uint64 { return 1 })
	l.epochRecords = 1
	fail := true
	k := &failingKey{fail: &fail}
	if muts := l.put(nil, crdt.Key{Video: "v", Event: "view"}, []byte{0x92, 0x90, 0x90}, 0, 0, k); len(muts) != 0 {
		t.Fatalf("put wrote %+v, want the state logged", muts)
	}
	muts, drained, deleted, err := l.prepare(nil, 0) // ends the epoch; the checkpoint fails
	if err == nil || len(drained) != 0 || len(deleted) != 0 || len(muts) != 1 || muts[0].Key[0] != 'l' {
		t.Fatalf("first batch: %+v, drained %d, deleted %d, err %v; want the record written and the failed checkpoint reported", muts, len(drained), len(deleted), err)
	}
	record := string(muts[0].Key)
	l.done(nil, drained, deleted)
	fail = false
	muts, drained, deleted, err = l.prepare(nil, 0) // the retry
	if err != nil || len(drained) != 1 || len(deleted) != 0 || len(muts) != 1 {
		t.Fatalf("retry: %d writes, drained %d, deleted %d, err %v; want the checkpoint written, nothing deleted yet", len(muts), len(drained), len(deleted), err)
	}
	l.done(nil, drained, deleted)
	muts, _, deleted, err = l.prepare(nil, 0)
	if err != nil || len(deleted) != 1 || string(deleted[0]) != record || len(muts) != 1 || !muts[0].Delete {
		t.Fatalf("after the durable checkpoint: %+v, deleted %q, err %v; want the epoch's record deleted", muts, deleted, err)
	}
}

// countingKey is a loggedKey that counts its checkpoints.
type countingKey struct {
	id     int
	writes *int
	epoch  uint8
}

func (k *countingKey) checkpoint(int64) (store.Mutation, bool, error) {
	*k.writes++
	return store.Mutation{Key: []byte(fmt.Sprint("c-", k.id)), Value: []byte{0x92, 0x90, 0x90}}, true, nil
}

func (*countingKey) setLogged(bool) {}

func (k *countingKey) logEpoch() uint8 { return k.epoch }

func (k *countingKey) setLogEpoch(v uint8) { k.epoch = v }

// TestCounterLogSkipsKeysLoggedAgain: draining an epoch writes the entries of
// the keys the next epoch has not logged again, and skips the others (their
// newer states are in the next epoch's records, which stay until that epoch
// is drained in turn); the epoch's records are deleted once the drain is
// durable all the same.
func TestCounterLogSkipsKeysLoggedAgain(t *testing.T) {
	seq := uint64(0)
	l := newCounterLog(func() uint64 { seq++; return seq })
	writes := 0
	var busy, idle []*countingKey
	for i := range 100 {
		busy = append(busy, &countingKey{id: i, writes: &writes})
		idle = append(idle, &countingKey{id: 100 + i, writes: &writes})
	}
	state := []byte{0x92, 0x90, 0x90}
	batch := func(keys ...[]*countingKey) (muts []store.Mutation, drained int, deleted [][]byte) {
		t.Helper()
		for _, ks := range keys {
			for _, k := range ks {
				if m := l.put(nil, crdt.Key{Video: fmt.Sprint("v", k.id), Event: "view"}, state, 0, 0, k); len(m) != 0 {
					t.Fatalf("put wrote %+v, want the state logged", m)
				}
			}
		}
		muts, dr, deleted, err := l.prepare(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		l.done(nil, dr, deleted)
		return muts, len(dr), deleted
	}
	// The first epoch: two batches of the 200 keys. The second ends it,
	// and starts draining it, 100 keys a batch (half a key per state).
	batch(busy, idle)
	recs := len(l.keys)
	l.epochRecords = 2 * recs
	batch(busy, idle)
	if len(l.drain) != 100 || writes != 100 {
		t.Fatalf("epoch ended: %d keys left to drain, %d written; want 100 and 100", len(l.drain), writes)
	}
	// The next batch logs the busy keys again: the drain skips them, and is
	// done without a write.
	if _, drained, _ := batch(busy); drained != 100 || writes != 100 || len(l.drain) != 0 {
		t.Fatalf("busy keys logged again: %d drained, %d written in all, %d left; want 100 drained with no write", drained, writes, len(l.drain))
	}
	// The drain is durable: the first epoch's records go in the next batch.
	if _, _, deleted := batch(); len(deleted) != 2*recs {
		t.Fatalf("%d records deleted, want the first epoch's %d", len(deleted), 2*recs)
	}
	if busy[0].logEpoch() != l.epoch {
		t.Fatal("a busy key is not in the current epoch: its state would be in no record")
	}
}

// TestCounterLogEpochStampsWrap: epochs are stamped 1 to 255 and then 1
// again, so a key last logged 255 epochs ago must not pass for one the
// current epoch logged: each time a rarely changed key is logged, it is
// checkpointed once, over more than a thousand epochs.
func TestCounterLogEpochStampsWrap(t *testing.T) {
	seq := uint64(0)
	l := newCounterLog(func() uint64 { seq++; return seq })
	l.epochRecords = 1
	writes, rareWrites := 0, 0
	rare := &countingKey{id: -1, writes: &rareWrites}
	state := []byte{0x92, 0x90, 0x90}
	epochs, logged := 0, 0
	lastStamp, lastEpochs := uint8(0), -1
	for i := range 3000 {
		k := &countingKey{id: i, writes: &writes} // a new key each batch keeps epochs ending
		keys := []*countingKey{k}
		// The rare key is logged again each time the stamps come round to
		// the one it was last logged under.
		if lastEpochs < 0 || l.epoch == lastStamp && epochs > lastEpochs {
			keys = append(keys, rare)
			logged++
			lastStamp, lastEpochs = l.epoch, epochs
		}
		for _, k := range keys {
			if m := l.put(nil, crdt.Key{Video: fmt.Sprint("v", k.id), Event: "view"}, state, 0, 0, k); len(m) != 0 {
				t.Fatalf("put wrote %+v, want the state logged", m)
			}
		}
		before := l.epoch
		_, drained, deleted, err := l.prepare(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		if l.epoch != before {
			epochs++
		}
		l.done(nil, drained, deleted)
	}
	for range 4 { // drain what is left
		_, drained, deleted, err := l.prepare(nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		l.done(nil, drained, deleted)
	}
	if epochs < 1000 {
		t.Fatalf("only %d epochs ended; the test needs the stamps to wrap several times", epochs)
	}
	if rareWrites != logged {
		t.Fatalf("the rare key was logged %d times and checkpointed %d; want once each", logged, rareWrites)
	}
}

// TestCounterLogPacesDeletes: a drained epoch's records are deleted a share
// per batch, as many as the batch has other mutations and at least
// minDeletes, not all in one batch (16,384 deletions made one group commit
// take 30-40 ms); a failed batch's deletions come back, and every record is
// deleted in the end, once.
func TestCounterLogPacesDeletes(t *testing.T) {
	l := newCounterLog(func() uint64 { return 0 })
	const records = 1000
	for i := range records {
		l.deletes = append(l.deletes, []byte(fmt.Sprint("l-", i)))
	}
	gone := map[string]bool{}
	batch := func(others int, fail bool) int {
		t.Helper()
		muts, drained, deleted, err := l.prepare(make([]store.Mutation, others), 0)
		if err != nil {
			t.Fatal(err)
		}
		if len(muts) != others+len(deleted) {
			t.Fatalf("%d mutations for %d others and %d deletions", len(muts), others, len(deleted))
		}
		for _, m := range muts[others:] {
			if !m.Delete {
				t.Fatalf("a mutation after the others is not a deletion: %+v", m)
			}
		}
		if fail {
			l.done(errors.New("disk full"), drained, deleted)
			return len(deleted)
		}
		l.done(nil, drained, deleted)
		for _, k := range deleted {
			if gone[string(k)] {
				t.Fatalf("record %s deleted twice", k)
			}
			gone[string(k)] = true
		}
		return len(deleted)
	}
	if n := batch(3, true); n != minDeletes {
		t.Fatalf("a small batch deleted %d records, want %d", n, minDeletes)
	}
	if len(l.deletes) != records {
		t.Fatalf("after a failed batch %d deletions are due, want all %d back", len(l.deletes), records)
	}
	if n := batch(600, false); n != 600 {
		t.Fatalf("a batch of 600 mutations deleted %d records, want 600", n)
	}
	if n := batch(0, false); n != minDeletes {
		t.Fatalf("an empty batch deleted %d records, want %d", n, minDeletes)
	}
	if n := batch(0, false); n != records-600-minDeletes {
		t.Fatalf("the last batch deleted %d records, want the %d left", n, records-600-minDeletes)
	}
	if n := batch(0, false); n != 0 || len(gone) != records || l.deletes != nil {
		t.Fatalf("then %d more deleted, %d in all, %d due; want 0, %d, none", n, len(gone), len(l.deletes), records)
	}
}
