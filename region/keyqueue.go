package region

import "sync"

// keyQueue is the list of keys a table changed since the committer last cut
// a batch: changes push keys, the table's Prepare hook takes them all, and a
// failed batch pushes its keys back. It is safe for concurrent use.
type keyQueue[K comparable] struct {
	mu    sync.Mutex // protects keys and spare
	keys  []K
	spare []K // a list taken before and given back (recycle), empty
}

// push queues keys.
func (q *keyQueue[K]) push(keys ...K) {
	q.mu.Lock()
	q.keys = append(q.keys, keys...)
	q.mu.Unlock()
}

// len is how many keys are queued.
func (q *keyQueue[K]) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.keys)
}

// take empties the queue and returns what it held. The queue starts again
// with room for as many keys: batches tend to be alike, and growing by
// appends copied a batch of claims several times over (issue 9).
func (q *keyQueue[K]) take() []K {
	q.mu.Lock()
	n := len(q.keys)
	q.mu.Unlock()
	q.mu.Lock()
	next := q.spare
	q.spare = nil
	q.mu.Unlock()
	if n > 0 && cap(next) < n {
		next = make([]K, 0, n) // made with the lock released: pushes go on
	}
	q.mu.Lock()
	keys := q.keys
	q.keys = next
	q.mu.Unlock()
	return keys
}

// recycle gives back a list take returned, once its keys are used, for a
// later take to fill again: a hot batch queues tens of thousands of claims,
// and a new list for each was megabytes of fresh memory to fault in, zero
// and collect (issue 9).
func (q *keyQueue[K]) recycle(keys []K) {
	clear(keys) // drop the strings
	q.mu.Lock()
	if cap(keys) > cap(q.spare) {
		q.spare = keys[:0]
	}
	q.mu.Unlock()
}

// takeDistinct is take with each key once, in the order first queued: a key
// changed again before the batch was cut is written once.
func (q *keyQueue[K]) takeDistinct() []K {
	keys := q.take()
	if len(keys) < 2 {
		return keys
	}
	seen := make(map[K]struct{}, len(keys))
	out := keys[:0]
	for _, k := range keys {
		if _, dup := seen[k]; !dup {
			seen[k] = struct{}{}
			out = append(out, k)
		}
	}
	return out
}
