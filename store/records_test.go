package store

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/tallyhq/tally/crdt"
)

func TestCounterKeyRoundTrip(t *testing.T) {
	long := strings.Repeat("v", maxIDLen)
	tests := []crdt.Key{
		{Video: "a", Event: "b"},
		{Video: "video-1", Event: "view"},
		{Video: "A-Z_a.z:0-9", Event: "like"},
		{Video: long, Event: "view"},
		{Video: "v", Event: strings.Repeat("e", maxIDLen)},
	}
	for i, k := range tests {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			b := CounterKey(k)
			if b[0] != prefixCounter {
				t.Fatalf("CounterKey(%v) starts with %q, want %q", k, b[0], prefixCounter)
			}
			got, err := ParseCounterKey(b)
			if err != nil {
				t.Fatalf("ParseCounterKey(CounterKey(%v)): %v", k, err)
			}
			if got != k {
				t.Fatalf("round trip: got %v, want %v", got, k)
			}
		})
	}
}

func TestCounterKeysDoNotCollide(t *testing.T) {
	// The 0x00 separator keeps ("ab","c") and ("a","bc") apart.
	a := CounterKey(crdt.Key{Video: "ab", Event: "c"})
	b := CounterKey(crdt.Key{Video: "a", Event: "bc"})
	if bytes.Equal(a, b) {
		t.Fatalf("distinct keys encode the same: %q", a)
	}
}

func TestParseCounterKeyRejectsCorrupt(t *testing.T) {
	long := strings.Repeat("x", maxIDLen+1)
	tests := []struct {
		name string
		key  []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"too short", []byte("ca\x00")},
		{"wrong prefix", []byte("dvid\x00view")},
		{"meta prefix", []byte("mreplica")},
		{"no separator", []byte("cvideoview")},
		{"empty video", []byte("c\x00view")},
		{"empty event", []byte("cvideo\x00")},
		{"video too long", []byte("c" + long + "\x00view")},
		{"event too long", []byte("cvideo\x00" + long)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseCounterKey(tt.key)
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ParseCounterKey(%q) = %v, %v; want an error wrapping ErrCorrupt", tt.key, k, err)
			}
		})
	}
}

func TestCounterRoundTrip(t *testing.T) {
	s := memStore(t)
	var c1 crdt.PNCounter
	c1.Increment(1, 5, 1000)
	c1.Increment(2, 3, 2000)
	c1.Decrement(1, 1, 3000)
	var c2 crdt.PNCounter
	c2.Increment(7, 1, 4000)
	keys := []crdt.Key{{Video: "b", Event: "view"}, {Video: "a", Event: "view"}, {Video: "a", Event: "like"}}
	states := map[crdt.Key]crdt.PNCounter{keys[0]: c1, keys[1]: c2, keys[2]: {}}
	var muts []Mutation
	for _, k := range keys {
		m, err := CounterMutation(k, states[k])
		if err != nil {
			t.Fatalf("CounterMutation(%v): %v", k, err)
		}
		muts = append(muts, m)
	}
	write(t, s, muts...)

	for _, k := range keys {
		got, ok, err := s.Counter(k)
		if err != nil || !ok {
			t.Fatalf("Counter(%v) = ok %v, err %v", k, ok, err)
		}
		if !got.Equal(states[k]) {
			t.Errorf("Counter(%v) = %v, want %v", k, got, states[k])
		}
	}
	if got := func() uint64 { c, _, _ := s.Counter(keys[0]); return c.Value() }(); got != 7 {
		t.Errorf("value of %v = %d, want 7", keys[0], got)
	}
	if _, ok, err := s.Counter(crdt.Key{Video: "missing", Event: "view"}); ok || err != nil {
		t.Errorf("Counter(missing) = ok %v, err %v; want not found, no error", ok, err)
	}

	var order []crdt.Key
	err := s.ForEachCounter(func(k crdt.Key, c crdt.PNCounter) error {
		order = append(order, k)
		if !c.Equal(states[k]) {
			t.Errorf("ForEachCounter: %v = %v, want %v", k, c, states[k])
		}
		return nil
	})
	if err != nil {
		t.Fatalf("ForEachCounter: %v", err)
	}
	want := []crdt.Key{{Video: "a", Event: "like"}, {Video: "a", Event: "view"}, {Video: "b", Event: "view"}}
	if fmt.Sprint(order) != fmt.Sprint(want) {
		t.Errorf("ForEachCounter order = %v, want key order %v", order, want)
	}

	// fn's error stops the iteration and is returned.
	stop := errors.New("stop")
	calls := 0
	err = s.ForEachCounter(func(crdt.Key, crdt.PNCounter) error { calls++; return stop })
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ForEachCounter with failing fn: err %v after %d calls; want stop after 1", err, calls)
	}
}

func TestCounterValueMutation(t *testing.T) {
	// A pre-encoded state makes the same write as the state itself, and a
	// chunk's registers encoded directly read back as the chunk's state.
	var c crdt.PNCounter
	c.Increment(1, 5, 1000)
	c.Decrement(2, 1, 3000)
	k := crdt.Key{Video: "a", Event: "view"}
	want, err := CounterMutation(k, c)
	if err != nil {
		t.Fatalf("CounterMutation: %v", err)
	}
	enc, err := c.AppendBinary(nil)
	if err != nil {
		t.Fatalf("AppendBinary: %v", err)
	}
	if got := CounterValueMutation(k, enc); !bytes.Equal(got.Key, want.Key) || !bytes.Equal(got.Value, want.Value) || got.TTL != 0 || got.Delete {
		t.Fatalf("CounterValueMutation = %+v, CounterMutation = %+v", got, want)
	}

	var regs [crdt.HLLChunkRegisters]uint8
	regs[3], regs[200] = 7, crdt.HLLMaxRho
	ck := crdt.UniqueKey("a", 5)
	s := memStore(t)
	write(t, s, CounterValueMutation(ck, crdt.AppendChunkState(nil, &regs)))
	got, ok, err := s.Counter(ck)
	if err != nil || !ok || !got.Equal(crdt.ChunkState(&regs)) {
		t.Fatalf("Counter(%v) = %v, ok %v, err %v; want %v", ck, got, ok, err, crdt.ChunkState(&regs))
	}
}

func TestForEachCounterRejectsCorrupt(t *testing.T) {
	tests := []struct {
		name string
		mut  Mutation
	}{
		{"bad key", Mutation{Key: []byte("cnoseparator"), Value: mustCounter(t)}},
		{"bad value", Mutation{Key: CounterKey(crdt.Key{Video: "v", Event: "view"}), Value: []byte{0xc1, 0xff, 0x00}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := memStore(t)
			write(t, s, tt.mut)
			err := s.ForEachCounter(func(crdt.Key, crdt.PNCounter) error { return nil })
			if err == nil {
				t.Fatal("ForEachCounter over a corrupt record: no error")
			}
		})
	}
}

func mustCounter(t *testing.T) []byte {
	t.Helper()
	var c crdt.PNCounter
	c.Increment(1, 1, 1)
	b, err := c.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// expiresAt reads the Badger expiry (unix seconds, 0 = never) of key.
func expiresAt(t *testing.T, s *Store, key []byte) uint64 {
	t.Helper()
	var at uint64
	err := s.db.View(func(txn *badger.Txn) error {
		item, err := txn.Get(key)
		if err != nil {
			return err
		}
		at = item.ExpiresAt()
		return nil
	})
	if err != nil {
		t.Fatalf("read %q: %v", key, err)
	}
	return at
}

// checkExpiry asserts that a key written between before and after with ttl
// expires at (one of the whole seconds of) before+ttl .. after+ttl.
func checkExpiry(t *testing.T, s *Store, key []byte, ttl time.Duration, before, after time.Time) {
	t.Helper()
	got := expiresAt(t, s, key)
	lo, hi := uint64(before.Add(ttl).Unix()), uint64(after.Add(ttl).Unix())+1
	if got < lo || got > hi {
		t.Errorf("ExpiresAt(%q) = %d, want in [%d, %d] (ttl %v)", key, got, lo, hi, ttl)
	}
}

func claimMut(t *testing.T, k ClaimKey, c crdt.Claims, ttl time.Duration) Mutation {
	t.Helper()
	m, err := ClaimMutation(k, c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestClaimRoundTrip(t *testing.T) {
	s := memStore(t)
	k := ClaimKey{Video: "vid", User: "user", Window: 20000}
	c := crdt.NewClaims(0xdeadbeefcafe, 1_728_000_000_123)
	c.Merge(crdt.NewClaims(7, 1_728_000_000_000))
	c.Compensate(0xdeadbeefcafe)
	const ttl = 90 * time.Minute
	before := time.Now()
	write(t, s, claimMut(t, k, c, ttl))
	after := time.Now()

	got, ok, err := s.Claim(k)
	if err != nil || !ok || !got.Equal(c) {
		t.Fatalf("Claim(%v) = %v, %v, %v; want %v, true, nil", k, got, ok, err, c)
	}
	checkExpiry(t, s, claimKeyBytes(k), ttl, before, after)

	// Any other user, video or window has no claim.
	for _, other := range []ClaimKey{
		{Video: "vid", User: "user", Window: 20001},
		{Video: "vid", User: "user2", Window: 20000},
		{Video: "vid2", User: "user", Window: 20000},
		{Video: "vidu", User: "ser", Window: 20000},
	} {
		if got, ok, err := s.Claim(other); ok || err != nil {
			t.Errorf("Claim(%v) = %v, %v, %v; want none", other, got, ok, err)
		}
	}

	// ForEachClaim gives every claim back with its key.
	k2 := ClaimKey{Video: "vid", User: "u", Window: 1 << 40}
	write(t, s, claimMut(t, k2, crdt.NewClaims(1, 2), 0))
	seen := map[ClaimKey]crdt.Claims{}
	if _, err := s.ForEachClaim(func(k ClaimKey, c crdt.Claims) error { seen[k] = c; return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 2 || !seen[k].Equal(c) || !seen[k2].Equal(crdt.NewClaims(1, 2)) {
		t.Fatalf("ForEachClaim = %v", seen)
	}
}

// TestClaimFormat1 reads a claim as format 1 stored it: replica, ingest ms.
// TestClaimFormat1 opens a directory as format 1 left it, a claim being
// replica(u64 BE) ingestMs(u64 BE): Open migrates it to a claim set, keeping
// its expiry, and marks the directory with the current format.
func TestClaimFormat1(t *testing.T) {
	dir := t.TempDir()
	s, closeStore := openStore(t, dir)
	k := ClaimKey{Video: "v", User: "u", Window: 9}
	v := binary.BigEndian.AppendUint64(nil, 42)
	v = binary.BigEndian.AppendUint64(v, 1234)
	write(t, s, Mutation{Key: claimKeyBytes(k), Value: v, TTL: time.Hour},
		Mutation{Key: metaFormat, Value: binary.BigEndian.AppendUint64(nil, 1)})
	closeStore()

	before := time.Now()
	s, _ = openStore(t, dir)
	got, ok, err := s.Claim(k)
	if err != nil || !ok || !got.Equal(crdt.NewClaims(42, 1234)) {
		t.Fatalf("format-1 claim read as %v, %v, %v", got, ok, err)
	}
	checkExpiry(t, s, claimKeyBytes(k), time.Hour, before.Add(-time.Minute), time.Now())
	if f, _, _ := s.getUint64(metaFormat); f != formatVersion {
		t.Errorf("format after the migration: %d, want %d", f, formatVersion)
	}
}

func TestClaimWithoutTTLNeverExpires(t *testing.T) {
	s := memStore(t)
	k := ClaimKey{Video: "v", User: "u", Window: 1}
	m := claimMut(t, k, crdt.NewClaims(1, 2), 0)
	if m.TTL != 0 {
		t.Fatalf("ClaimMutation TTL = %v, want 0", m.TTL)
	}
	write(t, s, m)
	if at := expiresAt(t, s, claimKeyBytes(k)); at != 0 {
		t.Errorf("ExpiresAt = %d, want 0 (never)", at)
	}
}

func TestClaimRejectsCorruptValue(t *testing.T) {
	s := memStore(t)
	k := ClaimKey{Video: "v", User: "u", Window: 3}
	write(t, s, Mutation{Key: claimKeyBytes(k), Value: []byte{1, 2, 3}})
	if _, _, err := s.Claim(k); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Claim over a 3-byte value: err %v, want ErrCorrupt", err)
	}
	bad := crdt.PNCounter{P: crdt.NewGCounter(crdt.Slot{Replica: 1, Count: 9, Updated: 1})}
	v, _ := bad.MarshalBinary()
	write(t, s, Mutation{Key: claimKeyBytes(k), Value: v})
	if _, _, err := s.Claim(k); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Claim over a counter that is not a claim set: err %v, want ErrCorrupt", err)
	}
	write(t, s, Mutation{Key: []byte("dv\x00u"), Value: v})
	if _, err := s.ForEachClaim(func(ClaimKey, crdt.Claims) error { return nil }); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("ForEachClaim over a short key: err %v, want ErrCorrupt", err)
	}
}

func TestEventsRangeAndOrder(t *testing.T) {
	s := memStore(t)
	const ttl = 7 * 24 * time.Hour
	// Written out of order; ForEachEvent must return them by (ingest ms, replica, seq).
	evs := []struct {
		ev  Event
		seq uint64
	}{
		{Event{Video: "v4", Event: "view", User: "u", IngestMs: 400, Replica: 1, Fate: FateCounted}, 1},
		{Event{Video: "v2b", Event: "view", User: "u", IngestMs: 200, Replica: 2, Fate: FateDuplicate}, 1},
		{Event{Video: "v2a", Event: "view", User: "u", IngestMs: 200, Replica: 1, Fate: FateCounted, ClientMs: 199}, 9},
		{Event{Video: "v1", Event: "view", User: "u", IngestMs: 100, Replica: 1, Fate: FateRateLimited}, 1},
		{Event{Video: "v3", Event: "view", User: "u", IngestMs: 300, Replica: 1, Fate: FateCounted}, 1},
		{Event{Video: "v2c", Event: "view", User: "u", IngestMs: 200, Replica: 2, Fate: FateCounted}, 2},
	}
	var muts []Mutation
	before := time.Now()
	for _, e := range evs {
		m, err := EventMutation(e.ev, e.seq, ttl)
		if err != nil {
			t.Fatalf("EventMutation: %v", err)
		}
		if len(m.Key) != 25 || m.Key[0] != prefixEvent || m.TTL != ttl {
			t.Fatalf("EventMutation: key %x (%d bytes), ttl %v", m.Key, len(m.Key), m.TTL)
		}
		muts = append(muts, m)
	}
	write(t, s, muts...)
	checkExpiry(t, s, muts[0].Key, ttl, before, time.Now())

	videos := func(from, to int64) string {
		var got []string
		err := s.ForEachEvent(from, to, func(ev Event) error {
			got = append(got, ev.Video)
			return nil
		})
		if err != nil {
			t.Fatalf("ForEachEvent(%d, %d): %v", from, to, err)
		}
		return strings.Join(got, ",")
	}
	tests := []struct {
		from, to int64
		want     string
	}{
		{0, 1000, "v1,v2a,v2b,v2c,v3,v4"},
		{-50, 1000, "v1,v2a,v2b,v2c,v3,v4"},
		{200, 400, "v2a,v2b,v2c,v3"}, // from inclusive, to exclusive
		{201, 400, "v3"},
		{100, 101, "v1"},
		{100, 100, ""},
		{401, 1000, ""},
		{0, 100, ""},
		{300, 200, ""},
	}
	for _, tt := range tests {
		if got := videos(tt.from, tt.to); got != tt.want {
			t.Errorf("ForEachEvent(%d, %d) = [%s], want [%s]", tt.from, tt.to, got, tt.want)
		}
	}

	// The decoded event equals what was written.
	var got []Event
	if err := s.ForEachEvent(200, 201, func(ev Event) error { got = append(got, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || got[0] != evs[2].ev {
		t.Fatalf("events at 200 = %+v; want first %+v", got, evs[2].ev)
	}

	stop := errors.New("stop")
	calls := 0
	if err := s.ForEachEvent(0, 1000, func(Event) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ForEachEvent with failing fn: err %v after %d calls; want stop after 1", err, calls)
	}
}

func TestForEachEventRejectsCorrupt(t *testing.T) {
	good, err := EventMutation(Event{Video: "v", Event: "view", User: "u", IngestMs: 5, Replica: 1, Fate: FateCounted}, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		mut  Mutation
	}{
		{"short key", Mutation{Key: []byte("e\x00\x00\x00\x00\x00\x00\x00\x05"), Value: good.Value}},
		{"garbage value", Mutation{Key: good.Key, Value: []byte{0xc1}}},
		{"oversized value", Mutation{Key: good.Key, Value: bytes.Repeat([]byte{0xa1, 'x'}, 350)}},
		{"hostile length header", Mutation{Key: good.Key, Value: []byte{0x81, 0xa1, 'v', 0xdb, 0x7f, 0xff, 0xff, 0xff}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := memStore(t)
			write(t, s, tt.mut)
			err := s.ForEachEvent(0, 1000, func(Event) error { return nil })
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("ForEachEvent over a corrupt event: %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestFateString(t *testing.T) {
	tests := map[Fate]string{
		FateCounted:     "counted",
		FateDuplicate:   "duplicate",
		FateRateLimited: "rate_limited",
		Fate(0):         "fate(0)",
		Fate(9):         "fate(9)",
	}
	for f, want := range tests {
		if got := f.String(); got != want {
			t.Errorf("Fate(%d).String() = %q, want %q", uint8(f), got, want)
		}
	}
}

// openSmallTables opens a store on disk whose writes fill many small Badger
// tables, for the parallel scans to split; the test closes it.
func openSmallTables(t *testing.T) *Store {
	t.Helper()
	o := DefaultOptions(t.TempDir())
	o.MemTableBytes = 1 << 20
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestForEachCounterParallel: the parallel scan of a store whose counters
// fill several Badger tables is split into parts, and sees every counter
// once, with its state; an error of fn stops it and is returned.
func TestForEachCounterParallel(t *testing.T) {
	s := openSmallTables(t)
	const n = 200_000
	for lo := 0; lo < n; lo += 1000 {
		var muts []Mutation
		for i := lo; i < lo+1000; i++ {
			var c crdt.PNCounter
			c.Increment(7, uint64(i+1), 1)
			m, err := CounterMutation(crdt.Key{Video: fmt.Sprintf("video-%06d", i), Event: "view"}, c)
			if err != nil {
				t.Fatal(err)
			}
			muts = append(muts, m)
		}
		if err := s.write(muts); err != nil {
			t.Fatal(err)
		}
	}
	// Keys of other prefixes around them are not counters.
	if err := s.write([]Mutation{{Key: []byte("b-other"), Value: []byte("x")}, {Key: []byte("e-other"), Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if bounds := s.counterSplits(4); len(bounds) == 0 {
		t.Fatalf("no split points among %d tables", len(s.db.Tables()))
	}
	var mu sync.Mutex
	seen := make(map[string]uint64, n)
	err := s.ForEachCounterParallel(4, func(k crdt.Key, c crdt.PNCounter) error {
		mu.Lock()
		defer mu.Unlock()
		if _, dup := seen[k.Video]; dup {
			return fmt.Errorf("%s seen twice", k)
		}
		seen[k.Video] = c.Value()
		return nil
	})
	if err != nil || len(seen) != n {
		t.Fatalf("parallel scan: %d counters, %v; want %d", len(seen), err, n)
	}
	for i := range n {
		if v := seen[fmt.Sprintf("video-%06d", i)]; v != uint64(i+1) {
			t.Fatalf("video-%06d: %d, want %d", i, v, i+1)
		}
	}
	boom := errors.New("boom")
	var calls atomic.Int64
	err = s.ForEachCounterParallel(4, func(crdt.Key, crdt.PNCounter) error {
		if calls.Add(1) == 100 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || calls.Load() >= n {
		t.Fatalf("failing scan: %v after %d calls; want boom, and the scan stopped", err, calls.Load())
	}
}

// TestForEachEventParallel: the parallel scan of an event log that fills
// several Badger tables is split into parts, starts at fromMs, and sees
// every event from there once; an error of fn stops it and is returned.
func TestForEachEventParallel(t *testing.T) {
	s := openSmallTables(t)
	// Ingest calls at ms 0..19,999, of 8 events each: with 100-byte user
	// IDs, 20 MB of blocks, more than two of Badger's 8 MB tables even once
	// compaction has merged the small ones the flushes made. (Blocks of
	// larger calls go to the value log, leaving the tables too small to
	// split.)
	const calls, per = 20_000, 8
	pad := strings.Repeat("x", 90)
	seq := uint64(0)
	var muts []Mutation
	for ms := range int64(calls) {
		var b EventBlock
		for i := range per {
			b.Add("video", "view", fmt.Sprintf("user-%d-%d-%s", ms, i, pad), ms, FateCounted)
		}
		muts = append(muts, b.Mutations(ms, 7, func() uint64 { seq++; return seq }, time.Hour)...)
		if len(muts) >= 500 || ms == calls-1 {
			if err := s.write(muts); err != nil {
				t.Fatal(err)
			}
			muts = muts[:0]
		}
	}
	// Keys of other prefixes around them are not events.
	if err := s.write([]Mutation{{Key: []byte("d-other"), Value: []byte("x")}, {Key: []byte("f-other"), Value: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	const from = 100
	if bounds := s.splits(prefixEvent, eventTimeKey(from), 4); len(bounds) == 0 {
		t.Fatalf("no split points among %d tables", len(s.db.Tables()))
	}
	var mu sync.Mutex
	seen := make(map[string]bool)
	err := s.ForEachEventParallel(from, 4, func(ev Event) error {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case ev.IngestMs < from:
			return fmt.Errorf("event of %d ms, before %d", ev.IngestMs, from)
		case seen[ev.User]:
			return fmt.Errorf("%s seen twice", ev.User)
		case ev.Video != "video" || ev.Event != "view" || ev.Replica != 7 || ev.Fate != FateCounted || ev.ClientMs != ev.IngestMs:
			return fmt.Errorf("event %+v", ev)
		}
		seen[ev.User] = true
		return nil
	})
	if want := (calls - from) * per; err != nil || len(seen) != want {
		t.Fatalf("parallel scan: %d events, %v; want %d", len(seen), err, want)
	}
	boom := errors.New("boom")
	var n atomic.Int64
	err = s.ForEachEventParallel(0, 4, func(Event) error {
		if n.Add(1) == 100 {
			return boom
		}
		return nil
	})
	if !errors.Is(err, boom) || n.Load() >= calls*per {
		t.Fatalf("failing scan: %v after %d calls; want boom, and the scan stopped", err, n.Load())
	}
}
