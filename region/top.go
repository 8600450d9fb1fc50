package region

import (
	"cmp"
	"container/heap"
	"slices"
	"time"
)

// VideoCount is a video's durable view count, as TopVideos reports it.
type VideoCount struct {
	Video       string
	Count       uint64
	LastUpdated time.Time // zero if never updated
}

// TopVideos returns up to k videos with the highest durable view counts held
// in memory, highest first (ties by video ID). A replicating node holds every
// counter in memory; a single node holds those touched since it started. It
// reads every counter in memory, so callers should not call it per request
// on a hot path; the dashboard caches it.
func (n *Node) TopVideos(k int) []VideoCount {
	if k <= 0 {
		return nil
	}
	h := make(minVideoHeap, 0, k)
	for i := range n.counters.shards {
		s := &n.counters.shards[i]
		s.mu.RLock()
		for key, e := range s.m {
			if key.Event != EventView {
				continue
			}
			v := e.view.Load()
			if v.value == 0 {
				continue
			}
			vc := VideoCount{Video: key.Video, Count: v.value}
			if v.lastUpdated > 0 {
				vc.LastUpdated = time.UnixMilli(v.lastUpdated).UTC()
			}
			switch {
			case len(h) < k:
				heap.Push(&h, vc)
			case lessVideoCount(h[0], vc):
				h[0] = vc
				heap.Fix(&h, 0)
			}
		}
		s.mu.RUnlock()
	}
	out := []VideoCount(h)
	slices.SortFunc(out, func(a, b VideoCount) int {
		if c := cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Compare(a.Video, b.Video)
	})
	return out
}

// lessVideoCount orders by count, then by video ID descending, so that the
// heap's root is the entry to evict first.
func lessVideoCount(a, b VideoCount) bool {
	if a.Count != b.Count {
		return a.Count < b.Count
	}
	return a.Video > b.Video
}

// minVideoHeap is a min-heap of VideoCount under lessVideoCount.
type minVideoHeap []VideoCount

func (h minVideoHeap) Len() int           { return len(h) }
func (h minVideoHeap) Less(i, j int) bool { return lessVideoCount(h[i], h[j]) }
func (h minVideoHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *minVideoHeap) Push(x any)        { *h = append(*h, x.(VideoCount)) }
func (h *minVideoHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
