package region

import (
	"slices"
	"testing"
)

// TestKeyQueueTakeDistinct: each key comes out once, in the order first
// queued, and the queue is empty after.
func TestKeyQueueTakeDistinct(t *testing.T) {
	var q keyQueue[string]
	q.push("b", "a", "b", "c", "a")
	if got := q.takeDistinct(); !slices.Equal(got, []string{"b", "a", "c"}) {
		t.Fatalf("takeDistinct = %v, want [b a c]", got)
	}
	if got := q.takeDistinct(); len(got) != 0 {
		t.Fatalf("second takeDistinct = %v, want nothing", got)
	}
	q.push("x")
	if got := q.takeDistinct(); !slices.Equal(got, []string{"x"}) {
		t.Fatalf("takeDistinct of one = %v", got)
	}
}
