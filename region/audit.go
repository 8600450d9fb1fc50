package region

import (
	"cmp"
	"slices"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// AuditCount is what the raw event logs of every node say one video's view
// count must be: the batch layer's answer, to check the live counters against.
type AuditCount struct {
	Video string
	// Expected is the number of distinct (video, user, window) counted by
	// any replica: the exact count once every claim has met.
	Expected uint64
	// Counted is every counted:true event (one slot increment each);
	// Counted - Expected views were counted twice and must be compensated.
	Counted uint64
	// Compensations are the compensation events logged; Owed is how many
	// the claim rule calls for (one per losing claim). Compensations ==
	// Owed once the claims have met; more is a defect.
	Compensations uint64
	Owed          uint64
	Duplicates    uint64 // repeats answered counted:false
	RateLimited   uint64 // filtered, never counted
}

// Recompute applies the dedup and claim rules to the raw events of every
// node (view events only) and returns the count each video must have, sorted
// by video. windowMs is the dedup window the nodes ran with. The events of
// every replica that ever counted a view must be present, and retained from
// the start of the counts, for Expected to be the exact count.
func Recompute(events []store.Event, windowMs int64) []AuditCount {
	claims := map[crdt.ClaimKey]uint64{} // counted events per claim key
	out := map[string]*AuditCount{}
	get := func(video string) *AuditCount {
		a := out[video]
		if a == nil {
			a = &AuditCount{Video: video}
			out[video] = a
		}
		return a
	}
	for _, ev := range events {
		if ev.Event != EventView {
			continue
		}
		a := get(ev.Video)
		switch ev.Fate {
		case store.FateCounted:
			a.Counted++
			k := crdt.ClaimKey{Video: ev.Video, User: ev.User, Window: uint64(ev.IngestMs / windowMs)}
			claims[k]++
		case store.FateCompensated:
			a.Compensations++
		case store.FateDuplicate:
			a.Duplicates++
		case store.FateRateLimited:
			a.RateLimited++
		}
	}
	for k, n := range claims {
		a := get(k.Video)
		a.Expected++
		// Every claimant but the smallest (ingest ms, replica) loses and
		// owes one compensation.
		a.Owed += n - 1
	}
	res := make([]AuditCount, 0, len(out))
	for _, a := range out {
		res = append(res, *a)
	}
	slices.SortFunc(res, func(x, y AuditCount) int { return cmp.Compare(x.Video, y.Video) })
	return res
}

// AuditEvents calls fn for every event in this node's raw event log ingested
// in [fromMs, toMs), in ingest order, for one video or (video "") all of
// them, until fn returns an error. The log keeps events for the configured
// retention.
func (n *Node) AuditEvents(fromMs, toMs int64, video string, fn func(store.Event) error) error {
	if video != "" {
		if err := CheckID(CodeInvalidVideoID, "videoId", video); err != nil {
			return err
		}
	}
	return n.store.ForEachEvent(fromMs, toMs, func(ev store.Event) error {
		if video != "" && ev.Video != video {
			return nil
		}
		return fn(ev)
	})
}

// DedupWindowMs is the length of this node's dedup windows in milliseconds.
func (n *Node) DedupWindowMs() int64 { return n.windowMs }
