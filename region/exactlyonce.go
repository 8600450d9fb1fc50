package region

import (
	"fmt"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/store"
)

// Exactly once across regions (DESIGN, "Exactly once across regions").
//
// Every counted view leaves a claim set under (video, user, window) that
// replicates like a counter. When a client fails over and two replicas count
// the same view, each learns the other's claim; the smallest (ingest time,
// replica) wins and every loser adds 1 to its own N slot of the video's view
// counter, once: the compensation and the claim's move to StageCompensated
// are one durable write. A node compensates also for the claims it made
// under replica IDs it has retired (after an unclean async shutdown): they
// are in its store and nobody else would take their counts back; it does so
// in its current ID's slots. The rule is deterministic and monotone, so every
// replica converges on exactly one count per claim.

// mergeClaims folds the claim set c received from a peer (or the empty set,
// to apply the rule to a stored one) into k's, compensating if this node
// lost. It reports whether k's set now equals c. Claims of views and other
// deduplicated events compensate by taking the count back (N slot of the
// counter and of the buckets of the claim's ingest time); like transitions
// take back the step this node made: N for a like, P for an unlike.
func (n *Node) mergeClaims(k store.ClaimKey, c crdt.Claims) (adopted bool, err error) {
	event := k.Event
	if event == "" {
		event = EventView
	}
	var e *counterEntry
	var release func()
	for {
		if e, err = n.entry(crdt.Key{Video: k.Video, Event: event}); err != nil {
			return false, err
		}
		if release, err = n.committer.Admit(2); err != nil {
			return false, fmt.Errorf("%w: admit claim merge: %v", ErrUnavailable, err)
		}
		if !e.isEvicted() {
			break // and stays in the table while the gate is held
		}
		release()
	}
	defer release()
	var r mergeResult
	if event == EventLike {
		r = n.likes.merge(k, c, n.own)
	} else {
		r = n.claims.merge(k, c, n.own)
	}
	for _, ingestMs := range r.owed {
		// A lost like (odd transition) or view is taken back in N; a lost
		// unlike (even transition) in P.
		n.stepClaim(e, k.Video, k.User, event, event, ingestMs, event != EventLike || k.Window%2 == 1, store.FateCompensated)
		n.compensations.Add(1)
	}
	if r.reapplied != (store.ClaimKey{}) {
		// A like made again: P; an unlike: N (likeTable.merge).
		logged, unlike := EventLike, r.reapplied.Window%2 == 0
		if unlike {
			logged = "unlike"
		}
		n.stepClaim(e, k.Video, k.User, event, logged, r.reappliedMs, unlike, store.FateReapplied)
	}
	if r.changed {
		n.committer.Kick()
	}
	return r.adopted, nil
}

// stepClaim takes one step of video's event counter (e), for user's claim, and of the time
// buckets of ingestMs in this node's current slots, down (N) or up (P), and
// logs it in the raw event log as logged with fate, in the same batch.
// Callers hold the admission gate.
func (n *Node) stepClaim(e *counterEntry, video, user, event, logged string, ingestMs int64, down bool, fate store.Fate) {
	nowMs := n.now().UnixMilli()
	if down {
		n.counters.decrement(e, n.id.Replica, nowMs)
	} else {
		n.counters.increment(e, n.id.Replica, 1, nowMs)
	}
	if err := n.adjustBuckets(video, event, ingestMs, down); err != nil {
		n.log.Error("adjust time buckets", "video", video, "event", event, "err", err)
	}
	// The audit trail records the step next to the count it changes, in
	// the same batch.
	ev, err := store.EventMutation(store.Event{
		Video: video, Event: logged, User: user, IngestMs: nowMs, Replica: n.id.Replica, Fate: fate,
	}, n.nextSeq(), n.cfg.EventRetention)
	if err == nil {
		_, err = n.committer.Submit(ev)
	}
	if err != nil {
		n.log.Error("log claim step", "video", video, "event", event, "err", err)
	}
	if n.cfg.Observer != nil {
		n.cfg.Observer.Ingested(fate, 1)
	}
}

// expireClaims drops the claim sets whose window ended more than the lag
// budget ago, from memory and from replication. It sweeps at most once a
// second; Badger drops them by TTL.
func (n *Node) expireClaims(now time.Time) {
	nowMs := now.UnixMilli()
	if nowMs < n.nextExpire.Load() || !n.expireMu.TryLock() {
		return
	}
	defer n.expireMu.Unlock()
	n.nextExpire.Store(nowMs + 1000)
	if n.claims.expire(nowMs) == 0 {
		return
	}
	r := n.repl.Load()
	if r == nil {
		return
	}
	expired := func(k crdt.Key) bool {
		ck, ok := crdt.ParseClaimKey(k)
		return ok && ck.Event != EventLike && n.claims.expiryMs(ck.Window) <= nowMs
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.engine.Forget(now, expired)
	for k := range r.echoes {
		if expired(k) {
			delete(r.echoes, k)
		}
	}
}
