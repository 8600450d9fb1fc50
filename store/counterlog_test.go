package store

import (
	"encoding/binary"
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
		"empty":          {},
		"wrong tag":      append([]byte{claimBlockTag}, good[1:]...),
		"huge count":     {counterLogTag, 0xff, 0xff, 0xff, 0xff},
		"truncated":      good[:len(good)-1],
		"trailing":       append(append([]byte{}, good...), 0),
		"no state":       {counterLogTag, 0, 0, 0, 1, 1, 'v', 0, 1, 'e', 0, 0},
		"long state":     {counterLogTag, 0, 0, 0, 1, 1, 'v', 0, 1, 'e', 0, 0x7f, 0x92},
		"bad state":      {counterLogTag, 0, 0, 0, 1, 1, 'v', 0, 1, 'e', 0, 1, 0x93},
		"no video":       {counterLogTag, 0, 0, 0, 1, 0, 0, 1, 'e', 0, 1, 0x92},
		"empty event":    {counterLogTag, 0, 0, 0, 1, 1, 'v', 0, 0, 0, 1, 0x92},
		"no name":        {counterLogTag, 0, 0, 0, 1, 1, 'v', 1, 1, 0x92},
		"name 2 of 1":    {counterLogTag, 0, 0, 0, 2, 1, 'v', 0, 1, 'e', 0, 1, 0x92, 0, 2, 0},
		"v6 empty video": {counterLogTagV6, 0, 0, 0, 1, 0, 1, 'e', 0, 1, 0x92},
		"v6 zero state":  {counterLogTagV6, 0, 0, 0, 1, 1, 'v', 1, 'e', 0, 0},
	} {
		if err := decodeCounterLog(b, func(crdt.Key, crdt.PNCounter, int64) error { return nil }); !isCorrupt(err) {
			t.Errorf("%s: %v, want ErrCorrupt", name, err)
		}
	}
}

func isCorrupt(err error) bool { return errors.Is(err, ErrCorrupt) }

// TestCounterLogRefersBack: a batch's states as the region logs them (a
// video's total and its three buckets in a row; buckets of one minute shared
// by every video) take a reference for every video, event and state an
// earlier state of the record had, and come back whole; past maxLogNames
// names, new ones are written out; records of format 6 still decode; and
// states decoded from one encoding are not shared (a replay merges into
// them).
func TestCounterLogRefersBack(t *testing.T) {
	var want []logState
	var l CounterLog
	v6 := []byte{counterLogTagV6, 0, 0, 0, 0}
	v6n := 0
	add := func(k crdt.Key, c crdt.PNCounter, exp int64) {
		t.Helper()
		v, err := c.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !l.Add(k, v, exp) {
			t.Fatalf("add %s refused", k)
		}
		want = append(want, logState{k, c, exp})
		v6 = appendString(appendString(v6, k.Video), k.Event)
		v6 = binary.AppendUvarint(v6, uint64(exp))
		v6 = append(binary.AppendUvarint(v6, uint64(len(v))), v...)
		v6n++
	}
	const nowMs = 1_700_000_000_000
	for i := range 100 {
		video := fmt.Sprintf("video-%04d", i)
		var total, minute crdt.PNCounter
		total.Increment(7, uint64(i+1), nowMs)
		minute.Increment(7, 1, nowMs)
		add(crdt.Key{Video: video, Event: "view"}, total, 0)
		add(crdt.Key{Video: video, Event: "#view/m/28333333"}, minute, nowMs+60_000)
		add(crdt.Key{Video: video, Event: "#view/h/472222"}, minute, nowMs+3_600_000)
		add(crdt.Key{Video: video, Event: "#view/d/19675"}, minute, nowMs+86_400_000)
	}
	for i := range maxLogNames + 10 { // more names than a record keeps
		var c crdt.PNCounter
		c.Increment(7, 1, nowMs)
		add(crdt.Key{Video: "many", Event: fmt.Sprintf("e%d", i)}, c, 0)
		add(crdt.Key{Video: "many", Event: fmt.Sprintf("e%d", i)}, c, 0)
	}
	binary.BigEndian.PutUint32(v6[1:], uint32(v6n))
	var recs [][]byte
	size := 0
	for _, m := range l.Mutations(func() uint64 { return 1 }) {
		recs = append(recs, m.Value)
		size += len(m.Value)
	}
	// Format 6 wrote every video, event, expiry and state out; this one
	// writes a video ID, one state, and a few bytes of references for each
	// of its four states (and each record its names once).
	if size > len(v6)/2 {
		t.Errorf("%d records of %d bytes; format 6 took %d for the same states, want at most half", len(recs), size, len(v6))
	}
	for name, vals := range map[string][][]byte{"format 7": recs, "format 6": {v6}} {
		var got []logState
		for _, v := range vals {
			err := decodeCounterLog(v, func(k crdt.Key, c crdt.PNCounter, exp int64) error {
				got = append(got, logState{k, c, exp})
				return nil
			})
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d states, want %d", name, len(got), len(want))
		}
		for i := range want {
			if got[i].k != want[i].k || got[i].exp != want[i].exp || !got[i].c.Equal(want[i].c) {
				t.Fatalf("%s: state %d = %+v, want %+v", name, i, got[i], want[i])
			}
		}
		// The three buckets of video-0000 were written as one state and
		// referred to twice: merging into one leaves the others alone.
		got[1].c.Increment(7, 5, nowMs+1)
		if !got[2].c.Equal(want[2].c) || !got[3].c.Equal(want[3].c) {
			t.Fatalf("%s: states decoded from one encoding share memory", name)
		}
	}
}
