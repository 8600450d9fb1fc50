package region

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/tallyhq/tally/store"
)

// Many goroutines record overlapping views: every distinct (video, user) pair
// is counted exactly once, and reads during the writes never go backwards.
func TestConcurrentRecordAndRead(t *testing.T) {
	const (
		videos  = 3
		users   = 30
		writers = 8
		readers = 2
	)
	n := openNode(t, testConfig(newFakeClock(t0)))
	ctx := testCtx(t)

	type pair struct{ video, user string }
	var all []View
	for v := range videos {
		for u := range users {
			all = append(all, View{Video: fmt.Sprintf("v%d", v), User: fmt.Sprintf("u%d", u)})
		}
	}

	var (
		mu      sync.Mutex
		winners = map[pair]int{}
	)
	var done atomic.Bool
	var readersWG sync.WaitGroup
	for r := range readers {
		readersWG.Go(func() {
			last := make([]uint64, videos)
			for i := 0; !done.Load(); i++ {
				v := (i + r) % videos
				c, err := n.Views(fmt.Sprintf("v%d", v))
				if err != nil {
					t.Errorf("Views: %v", err)
					return
				}
				if c.Value < last[v] || c.Value > users {
					t.Errorf("Views(v%d) = %d after %d", v, c.Value, last[v])
					return
				}
				last[v] = c.Value
				runtime.Gosched()
			}
		})
	}

	var writersWG sync.WaitGroup
	for w := range writers {
		writersWG.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			order := rng.Perm(len(all))
			for i := 0; i < len(order); {
				// Alternate single views and small batches (which may repeat
				// a pair within the batch).
				size := 1 + rng.IntN(4)
				var batch []View
				for j := 0; j < size && i < len(order); j++ {
					batch = append(batch, all[order[i]])
					if rng.IntN(5) == 0 {
						batch = append(batch, all[order[i]])
					}
					i++
				}
				res, err := n.RecordViews(ctx, batch)
				if err != nil {
					t.Errorf("RecordViews: %v", err)
					return
				}
				mu.Lock()
				for k, r := range res {
					if r.Err != nil || (r.Fate != store.FateCounted && r.Fate != store.FateDuplicate) {
						t.Errorf("result %+v", r)
					}
					if r.Count < 1 || r.Count > users {
						t.Errorf("%+v: count %d", batch[k], r.Count)
					}
					if r.Counted {
						winners[pair{batch[k].Video, batch[k].User}]++
					}
				}
				mu.Unlock()
			}
		})
	}
	writersWG.Wait()
	done.Store(true)
	readersWG.Wait()

	for _, v := range all {
		if w := winners[pair{v.Video, v.User}]; w != 1 {
			t.Errorf("%s/%s counted %d times, want exactly once", v.Video, v.User, w)
		}
	}
	for v := range videos {
		if c := views(t, n, fmt.Sprintf("v%d", v)); c.Value != users {
			t.Errorf("Views(v%d) = %d, want %d", v, c.Value, users)
		}
	}
	// Per video: its total and its minute, hour and day buckets.
	if st := n.Stats(); st.Claims != videos*users || st.Counters != 4*videos {
		t.Errorf("Stats = %+v, want %d claims and %d counters", st, videos*users, 4*videos)
	}
}

// Concurrent first views of one video not yet in memory share one entry.
func TestConcurrentFirstViews(t *testing.T) {
	n := openNode(t, testConfig(newFakeClock(t0)))
	ctx := testCtx(t)
	const g = 16
	var wg sync.WaitGroup
	for i := range g {
		wg.Go(func() {
			if _, err := n.RecordView(ctx, View{Video: "fresh", User: fmt.Sprint("u", i)}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if c := views(t, n, "fresh"); c.Value != g {
		t.Fatalf("Views = %d, want %d", c.Value, g)
	}
}
