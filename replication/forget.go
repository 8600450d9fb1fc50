package replication

import (
	"time"

	"github.com/tallyhq/tally/crdt"
)

// Forget removes every key for which expired returns true from the engine:
// from the digest, the change log and unacknowledged repair pages. It is for
// state with an end of life that every replica derives from the key alone
// (dedup claims expire with their window), so that replicas drop it at about
// the same time and digests agree again; a peer still holding such a key
// until its own clock passes the end ships it in a repair, and the node
// ignores it. A forgotten key that changes again is a new key. Forget costs
// one pass over all keys and returns the number removed.
func (e *Engine) Forget(now time.Time, expired func(crdt.Key) bool) int {
	_ = now // part of the API, like Changed's
	remap := make([]keyID, len(e.keys))
	const gone = ^keyID(0)
	kept := e.keys[:0]
	removed := 0
	for id := range e.keys {
		info := e.keys[id]
		if !expired(info.key) {
			remap[id] = keyID(len(kept))
			kept = append(kept, info)
			continue
		}
		remap[id] = gone
		removed++
		delete(e.ids, info.key)
		e.sums[bucketOf(info.key, len(e.buckets))] ^= info.hash
		if info.seq > e.dropped {
			e.live-- // its latest log entry goes with it
		}
	}
	if removed == 0 {
		return 0
	}
	clear(e.keys[len(kept):])
	e.keys = kept
	for k, id := range e.ids {
		e.ids[k] = remap[id]
	}
	for i := range e.buckets {
		b := &e.buckets[i]
		ids := b.ids[:0]
		for _, id := range b.ids {
			if nid := remap[id]; nid != gone {
				ids = append(ids, nid) // filtering keeps a sorted bucket sorted
			}
		}
		b.ids = ids
	}
	log := e.log[:0]
	for _, ent := range e.log[e.lo:] {
		if nid := remap[ent.id]; nid != gone {
			log = append(log, logEntry{seq: ent.seq, id: nid})
		}
	}
	clear(e.log[len(log):])
	e.log, e.lo = log, 0
	for _, id := range e.order {
		p := e.peers[id]
		if p.session != nil && p.session.out != nil {
			remapPages(p.session.out, remap, gone)
		}
		if p.resp != nil {
			remapPages(p.resp, remap, gone)
		}
	}
	return removed
}

// remapPages renumbers the keys of a stream's unacknowledged pages after
// Forget, dropping forgotten ones (a page may end up empty; its ack still
// counts).
func remapPages(s *stream, remap []keyID, gone keyID) {
	for i := range s.pages {
		pg := &s.pages[i]
		ids, hashes := pg.ids[:0], pg.hashes[:0]
		for j, id := range pg.ids {
			if nid := remap[id]; nid != gone {
				ids = append(ids, nid)
				if j < len(pg.hashes) {
					hashes = append(hashes, pg.hashes[j])
				}
			}
		}
		pg.ids, pg.hashes = ids, hashes
	}
}
