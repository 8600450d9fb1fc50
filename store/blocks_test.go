package store

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/crdt"
)

func seqFrom(start uint64) func() uint64 {
	return func() uint64 { start++; return start }
}

// TestEventBlockRoundTrip: events of a block come back from ForEachEvent in
// the order they were added, with the block's ingest time and replica, next
// to single events in key order.
func TestEventBlockRoundTrip(t *testing.T) {
	s := memStore(t)
	var blk EventBlock
	blk.Grow(3, 30)
	blk.Add("v1", "view", "u1", 0, FateCounted)
	blk.Add("v2", "view", "u2", 1_700_000_000_000, FateDuplicate)
	blk.Add("v3", "unlike", "u3", -5, FateRateLimited)
	if blk.Len() != 3 {
		t.Fatalf("Len = %d, want 3", blk.Len())
	}
	muts := blk.Mutations(200, 7, seqFrom(0), time.Hour)
	if len(muts) != 1 || blk.Len() != 0 || muts[0].TTL != time.Hour {
		t.Fatalf("%d mutations, Len after %d; want 1 and an empty block", len(muts), blk.Len())
	}
	single, err := EventMutation(Event{Video: "v0", Event: "view", User: "u", IngestMs: 100, Replica: 7, Fate: FateCounted}, 9, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	later, err := EventMutation(Event{Video: "v4", Event: "view", User: "u", IngestMs: 300, Replica: 7, Fate: FateCompensated}, 10, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write(t, s, append(muts, single, later)...)
	var got []Event
	if err := s.ForEachEvent(0, 1000, func(ev Event) error { got = append(got, ev); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []Event{
		{Video: "v0", Event: "view", User: "u", IngestMs: 100, Replica: 7, Fate: FateCounted},
		{Video: "v1", Event: "view", User: "u1", IngestMs: 200, Replica: 7, Fate: FateCounted},
		{Video: "v2", Event: "view", User: "u2", ClientMs: 1_700_000_000_000, IngestMs: 200, Replica: 7, Fate: FateDuplicate},
		{Video: "v3", Event: "unlike", User: "u3", ClientMs: -5, IngestMs: 200, Replica: 7, Fate: FateRateLimited},
		{Video: "v4", Event: "view", User: "u", IngestMs: 300, Replica: 7, Fate: FateCompensated},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("ForEachEvent =\n%v\nwant\n%v", got, want)
	}
	// The range bounds apply to the block's time; fn's error stops the walk
	// inside a block and comes back as is.
	got = got[:0]
	if err := s.ForEachEvent(150, 250, func(ev Event) error { got = append(got, ev); return nil }); err != nil || len(got) != 3 {
		t.Fatalf("events in [150, 250): %v, %v; want the block's 3", got, err)
	}
	stop := errors.New("stop")
	calls := 0
	if err := s.ForEachEvent(150, 1000, func(Event) error { calls++; return stop }); !errors.Is(err, stop) || calls != 1 {
		t.Fatalf("stop in a block: %v after %d calls", err, calls)
	}
}

// TestEventBlockSplit: an event that would take a block past
// MaxEventBlockBytes starts the next, and every event comes back once, in
// order.
func TestEventBlockSplit(t *testing.T) {
	s := memStore(t)
	long := strings.Repeat("x", 120)
	const n = 2 * MaxEventBlockBytes / 200
	var blk EventBlock
	for i := range n {
		blk.Add(fmt.Sprintf("%s%06d", long, i), "view", long, int64(i), FateCounted)
	}
	muts := blk.Mutations(5, 3, seqFrom(0), 0)
	if len(muts) < 2 {
		t.Fatalf("%d blocks for %d events; want them split", len(muts), n)
	}
	for _, m := range muts {
		if len(m.Value) > MaxEventBlockBytes {
			t.Fatalf("block of %d bytes", len(m.Value))
		}
	}
	write(t, s, muts...)
	events := 0
	if err := s.ForEachEvent(0, 10, func(e Event) error {
		if e.ClientMs != int64(events) || e.IngestMs != 5 || e.Replica != 3 {
			t.Fatalf("event %d is %+v", events, e)
		}
		events++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if events != n {
		t.Fatalf("%d events back, want %d", events, n)
	}
}

// TestEventBlockRejectsCorrupt: a malformed block is ErrCorrupt, and fn sees
// none of its events.
func TestEventBlockRejectsCorrupt(t *testing.T) {
	var blk EventBlock
	blk.Add("v", "view", "u", 1, FateCounted)
	blk.Add("w", "view", "u", 1, FateCounted)
	good := blk.Mutations(5, 1, seqFrom(0), 0)[0].Value
	cases := map[string][]byte{
		"truncated":        good[:len(good)-1],
		"trailing":         append(append([]byte{}, good...), 0),
		"huge count":       append([]byte{eventBlockTag, 0xff, 0xff, 0xff, 0xff}, good[blockHeader:]...),
		"empty ID":         {eventBlockTag, 0, 0, 0, 1, 1, 0, 4, 'v', 'i', 'e', 'w', 1, 'u', 2, 0, 0},
		"ID over the max":  append([]byte{eventBlockTag, 0, 0, 0, 1, 1, 0x81, 0x01}, make([]byte, 200)...),
		"short header":     {eventBlockTag, 0},
		"length past data": {eventBlockTag, 0, 0, 0, 1, 1, 50, 'v', 0, 0, 0, 0, 0},
		"wrong tag":        append([]byte{0x80}, good[1:]...),
	}
	for name, v := range cases {
		seen := 0
		err := decodeEventBlock(v, 1, 1, func(Event) error { seen++; return nil })
		if !errors.Is(err, ErrCorrupt) || seen != 0 {
			t.Errorf("event block %s: %v after %d events, want ErrCorrupt before any", name, err, seen)
		}
	}
}

// TestClaimBlockRejectsCorrupt: a malformed claim block, or a block key that
// is not one, is ErrCorrupt, and fn sees none of its claims.
func TestClaimBlockRejectsCorrupt(t *testing.T) {
	var blk ClaimBlock
	blk.Add(ClaimKey{Video: "v", User: "u", Window: 9}, 5)
	blk.Add(ClaimKey{Video: "w", Event: "share", User: "u", Window: 9}, 6)
	good := blk.Mutations(9, 1, seqFrom(0), 0)[0]
	if err := decodeClaimBlock(good.Key, good.Value, func(ClaimKey, crdt.Claims) error { return nil }); err != nil {
		t.Fatalf("good claim block: %v", err)
	}
	zeroReplica := append([]byte{}, good.Key...)
	clear(zeroReplica[9:17])
	slash := []byte{claimBlockTag, 0, 0, 0, 1, 1, 'v', 3, 'a', '/', 'b', 0, 2}
	for name, kv := range map[string][2][]byte{
		"short key":     {good.Key[:24], good.Value},
		"replica 0":     {zeroReplica, good.Value},
		"truncated":     {good.Key, good.Value[:len(good.Value)-1]},
		"trailing":      {good.Key, append(append([]byte{}, good.Value...), 0)},
		"count too big": {good.Key, append([]byte{claimBlockTag, 0, 1, 0, 0}, good.Value[blockHeader:]...)},
		"event tag":     {good.Key, append([]byte{eventBlockTag}, good.Value[1:]...)},
		"user with /":   {good.Key, slash},
		"empty video":   {good.Key, []byte{claimBlockTag, 0, 0, 0, 1, 0, 1, 'u', 0, 2}},
		"negative time": {good.Key, []byte{claimBlockTag, 0, 0, 0, 1, 1, 'v', 1, 'u', 0, 1}},
	} {
		seen := 0
		err := decodeClaimBlock(kv[0], kv[1], func(ClaimKey, crdt.Claims) error { seen++; return nil })
		if !errors.Is(err, ErrCorrupt) || seen != 0 {
			t.Errorf("claim block %s: %v after %d claims, want ErrCorrupt before any", name, err, seen)
		}
	}
}
