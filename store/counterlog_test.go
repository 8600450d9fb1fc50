package store

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// TestCounterLogRoundTrip: states added to a log come back from its records,
// split across records at MaxBlockBytes, and a state too large is refused.
func TestCounterLogRoundTrip(t *testing.T) {
	var l CounterLog
	want := map[crdt.Key]crdt.PNCounter{}
	for i := range 200 {
		k := crdt.Key{Video: fmt.Sprintf("video-%03d", i), Event: "view"}
		var c crdt.PNCounter
		c.Increment(crdt.ReplicaID(i%3+1), uint64(i+1), int64(1_700_000_000_000+i))
		if i%5 == 0 {
			c.Decrement(9, 1, 1_700_000_000_500)
		}
		v, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !l.Add(k, v, int64(i)) {
			t.Fatalf("state %d refused", i)
		}
		want[k] = c
	}
	if l.Len() != 200 {
		t.Fatalf("Len %d, want 200", l.Len())
	}
	var big crdt.PNCounter
	for r := range 100 {
		big.Increment(crdt.ReplicaID(r+1), 1<<40, 1_700_000_000_000)
	}
	bv, _ := big.MarshalBinary()
	if l.Add(crdt.Key{Video: "v", Event: "view"}, bv, 0) {
		t.Fatalf("a %d-byte state went into the log", len(bv))
	}
	seq := uint64(0)
	muts := l.Mutations(func() uint64 { seq++; return seq })
	if len(muts) < 2 || l.Len() != 0 {
		t.Fatalf("%d records, log left with %d; want several records and an empty log", len(muts), l.Len())
	}
	got := 0
	for _, m := range muts {
		if len(m.Value) > MaxBlockBytes || m.Key[0] != prefixCounterLog || m.TTL != 0 {
			t.Fatalf("record %x: %d bytes, TTL %v", m.Key, len(m.Value), m.TTL)
		}
		err := decodeCounterLog(m.Value, func(k crdt.Key, c crdt.PNCounter, exp int64) error {
			w, ok := want[k]
			if !ok || !w.Equal(c) {
				return fmt.Errorf("%s: got %v, want %v", k, c, w)
			}
			var i int
			fmt.Sscanf(k.Video, "video-%d", &i)
			if exp != int64(i) {
				return fmt.Errorf("%s: expiry %d, want %d", k, exp, i)
			}
			got++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if got != 200 {
		t.Fatalf("decoded %d states, want 200", got)
	}
}

// TestReplayCounterLog: states left in the log merge into their 'c'
// entries (newer over older, older changing nothing), expired ones are
// dropped, the log is gone afterwards, and a second replay finds nothing.
func TestReplayCounterLog(t *testing.T) {
	dir := t.TempDir()
	s, closeFn := openStore(t, dir)
	now := time.Now().UnixMilli()
	kA := crdt.Key{Video: "a", Event: "view"}
	kB := crdt.Key{Video: "b", Event: "view"}
	kOld := crdt.Key{Video: "old", Event: "view/m/1"}
	var disk, newer, older crdt.PNCounter
	disk.Increment(1, 5, 100)
	newer.Increment(1, 7, 200)
	newer.Increment(2, 1, 200)
	older.Increment(1, 3, 50)
	m, _ := CounterMutation(kA, disk)
	if err := s.writeSync([]Mutation{m}); err != nil {
		t.Fatal(err)
	}
	var l CounterLog
	add := func(k crdt.Key, c crdt.PNCounter, exp int64) {
		v, _ := c.MarshalBinary()
		if !l.Add(k, v, exp) {
			t.Fatalf("add %s refused", k)
		}
	}
	add(kA, newer, 0)
	add(kB, older, now+time.Hour.Milliseconds())
	add(kOld, newer, now-1) // expired
	seq := uint64(10)
	recs := l.Mutations(func() uint64 { seq++; return seq })
	add(kA, older, 0) // an older state logged later changes nothing
	recs = append(recs, l.Mutations(func() uint64 { seq++; return seq })...)
	if err := s.writeSync(recs); err != nil {
		t.Fatal(err)
	}
	closeFn()

	s, _ = openStore(t, dir)
	n, err := s.ReplayCounterLog(now)
	if err != nil || n != 4 {
		t.Fatalf("replay: %d states, %v; want 4", n, err)
	}
	want := disk.Clone()
	want.Merge(newer)
	for k, w := range map[crdt.Key]crdt.PNCounter{kA: want, kB: older} {
		c, ok, err := s.Counter(k)
		if err != nil || !ok || !c.Equal(w) {
			t.Errorf("%s after replay: %v %v %v, want %v", k, c, ok, err, w)
		}
	}
	if _, ok, _ := s.Counter(kOld); ok {
		t.Error("an expired logged state was written")
	}
	if n, err := s.ReplayCounterLog(now); err != nil || n != 0 {
		t.Fatalf("second replay: %d states, %v; want an empty log", n, err)
	}
}

// TestCounterLogRejects: malformed records are errors wrapping ErrCorrupt.
func TestCounterLogRejects(t *testing.T) {
	var l CounterLog
	var c crdt.PNCounter
	c.Increment(1, 1, 1)
	v, _ := c.MarshalBinary()
	l.Add(crdt.Key{Video: "v", Event: "view"}, v, 5)
	good := l.Mutations(func() uint64 { return 1 })[0].Value
	for name, b := range map[string][]byte{
		"empty":       {},
		"wrong tag":   append([]byte{claimBlockTag}, good[1:]...),
		"huge count":  {counterLogTag, 0xff, 0xff, 0xff, 0xff},
		"truncated":   good[:len(good)-1],
		"trailing":    append(append([]byte{}, good...), 0),
		"zero state":  {counterLogTag, 0, 0, 0, 1, 1, 'v', 1, 'e', 0, 0},
		"long state":  {counterLogTag, 0, 0, 0, 1, 1, 'v', 1, 'e', 0, 0x7f, 0x92},
		"bad state":   {counterLogTag, 0, 0, 0, 1, 1, 'v', 1, 'e', 0, 1, 0x93},
		"empty video": {counterLogTag, 0, 0, 0, 1, 0, 1, 'e', 0, 1, 0x92},
	} {
		if err := decodeCounterLog(b, func(crdt.Key, crdt.PNCounter, int64) error { return nil }); !isCorrupt(err) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func isCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }
