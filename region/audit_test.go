package region

import (
	"testing"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

func TestRecompute(t *testing.T) {
	const w = 1000
	ev := func(video, user string, ms int64, r uint64, f store.Fate) store.Event {
		return store.Event{Video: video, Event: EventView, User: user, IngestMs: ms, Replica: crdt.ReplicaID(r), Fate: f}
	}
	events := []store.Event{
		ev("a", "u1", 100, 1, store.FateCounted),
		ev("a", "u1", 200, 1, store.FateDuplicate),
		ev("a", "u1", 150, 2, store.FateCounted),     // failover double count...
		ev("a", "u1", 900, 2, store.FateCompensated), // ...taken back by the loser
		ev("a", "u1", 1100, 1, store.FateCounted),    // next window: counts again
		ev("a", "u2", 300, 3, store.FateRateLimited),
		ev("b", "u1", 100, 1, store.FateCounted),
		ev("b", "u1", 100, 3, store.FateCounted), // not yet compensated
		{Video: "a", Event: "like", User: "u9", IngestMs: 1, Replica: 1, Fate: store.FateCounted},
	}
	got := Recompute(events, w)
	want := []AuditCount{
		{Video: "a", Expected: 2, Counted: 3, Compensations: 1, Owed: 1, Duplicates: 1, RateLimited: 1},
		{Video: "b", Expected: 1, Counted: 2, Owed: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("video %s: got %+v, want %+v", want[i].Video, got[i], want[i])
		}
	}
}
