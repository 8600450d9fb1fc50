package crdt

import (
	"fmt"
	"math"
	"sort"
	"strconv"
)

// ReplicaID names one incarnation of one node. A node whose data is lost, or
// which may have acknowledged writes it did not persist, takes a new ReplicaID,
// so that no slot value is ever produced twice.
type ReplicaID uint64

// String formats the ID as 16 lowercase hex digits.
func (r ReplicaID) String() string { return fmt.Sprintf("%016x", uint64(r)) }

// ParseReplicaID parses the form written by ReplicaID.String.
func ParseReplicaID(s string) (ReplicaID, error) {
	v, err := strconv.ParseUint(s, 16, 64)
	if err != nil || len(s) != 16 {
		return 0, fmt.Errorf("parse replica id %q: want 16 hex digits", s)
	}
	return ReplicaID(v), nil
}

// Slot is one replica's contribution to a G-Counter.
type Slot struct {
	Replica ReplicaID
	Count   uint64 // increments made by Replica, ever
	Updated int64  // unix milliseconds of Replica's latest increment
}

// GCounter is a grow-only counter: one slot per replica, value = Σ counts.
// The zero value is an empty counter ready to use.
type GCounter struct {
	slots []Slot // sorted by Replica, no duplicates
}

// NewGCounter builds a counter from slots in any order. Slots naming the same
// replica are merged.
func NewGCounter(slots ...Slot) GCounter {
	var g GCounter
	for _, s := range slots {
		g.mergeSlot(s)
	}
	return g
}

// Len is the number of replicas with a slot.
func (g GCounter) Len() int { return len(g.slots) }

// Slots returns a copy of the slots, sorted by replica.
func (g GCounter) Slots() []Slot {
	out := make([]Slot, len(g.slots))
	copy(out, g.slots)
	return out
}

// Get returns the slot of replica r (zero if it has none).
func (g GCounter) Get(r ReplicaID) Slot {
	if i, ok := g.find(r); ok {
		return g.slots[i]
	}
	return Slot{Replica: r}
}

// Value is the sum of all slot counts, saturating at math.MaxUint64.
func (g GCounter) Value() uint64 {
	var sum uint64
	for _, s := range g.slots {
		sum = addSat(sum, s.Count)
	}
	return sum
}

// LastUpdated is the latest Updated time of any slot, or 0 for an empty counter.
func (g GCounter) LastUpdated() int64 {
	var t int64
	for _, s := range g.slots {
		t = max(t, s.Updated)
	}
	return t
}

// Increment adds n to replica r's slot and moves its Updated time forward to
// nowMs (never backwards, so a clock step back cannot shrink the state).
func (g *GCounter) Increment(r ReplicaID, n uint64, nowMs int64) {
	nowMs = max(nowMs, 0)
	i, ok := g.find(r)
	if !ok {
		if n != 0 || nowMs != 0 {
			g.insertAt(i, Slot{Replica: r, Count: n, Updated: nowMs})
		}
		return
	}
	s := &g.slots[i]
	s.Count = addSat(s.Count, n)
	s.Updated = max(s.Updated, nowMs)
}

// Merge folds o into g (per-slot max of Count and of Updated) and reports
// whether g changed.
func (g *GCounter) Merge(o GCounter) bool {
	changed := false
	for _, s := range o.slots {
		if g.mergeSlot(s) {
			changed = true
		}
	}
	return changed
}

// Delta returns the slots of g that are ahead of since in either field: the
// least state that, merged into since, makes it cover g.
func (g GCounter) Delta(since GCounter) GCounter {
	var d GCounter
	for _, s := range g.slots {
		old := since.Get(s.Replica)
		if s.Count > old.Count || s.Updated > old.Updated {
			d.slots = append(d.slots, s)
		}
	}
	return d
}

// Covers reports whether g ⊒ o: merging o into g would change nothing.
func (g GCounter) Covers(o GCounter) bool {
	for _, s := range o.slots {
		mine := g.Get(s.Replica)
		if s.Count > mine.Count || s.Updated > mine.Updated {
			return false
		}
	}
	return true
}

// Equal reports whether g and o hold the same slots.
func (g GCounter) Equal(o GCounter) bool {
	if len(g.slots) != len(o.slots) {
		return false
	}
	for i := range g.slots {
		if g.slots[i] != o.slots[i] {
			return false
		}
	}
	return true
}

// Clone returns a deep copy of g.
func (g GCounter) Clone() GCounter {
	if g.slots == nil {
		return GCounter{}
	}
	return GCounter{slots: g.Slots()}
}

// String formats g for debugging, e.g. "{0000000000000001:3@1700000000000}".
func (g GCounter) String() string {
	b := []byte{'{'}
	for i, s := range g.slots {
		if i > 0 {
			b = append(b, ' ')
		}
		b = fmt.Appendf(b, "%s:%d@%d", s.Replica, s.Count, s.Updated)
	}
	return string(append(b, '}'))
}

func (g GCounter) find(r ReplicaID) (int, bool) {
	// Counters have a handful of slots; a linear scan beats binary search there.
	if len(g.slots) <= 8 {
		for i, s := range g.slots {
			if s.Replica >= r {
				return i, s.Replica == r
			}
		}
		return len(g.slots), false
	}
	i := sort.Search(len(g.slots), func(i int) bool { return g.slots[i].Replica >= r })
	return i, i < len(g.slots) && g.slots[i].Replica == r
}

func (g *GCounter) insertAt(i int, s Slot) {
	g.slots = append(g.slots, Slot{})
	copy(g.slots[i+1:], g.slots[i:])
	g.slots[i] = s
}

func (g *GCounter) mergeSlot(s Slot) bool {
	s.Updated = max(s.Updated, 0) // the zero slot is the bottom; nothing is below it
	i, ok := g.find(s.Replica)
	if !ok {
		if s.Count == 0 && s.Updated == 0 {
			return false // merging bottom changes nothing and must not add a slot
		}
		g.insertAt(i, s)
		return true
	}
	cur := &g.slots[i]
	changed := false
	if s.Count > cur.Count {
		cur.Count = s.Count
		changed = true
	}
	if s.Updated > cur.Updated {
		cur.Updated = s.Updated
		changed = true
	}
	return changed
}

func addSat(a, b uint64) uint64 {
	if a > math.MaxUint64-b {
		return math.MaxUint64
	}
	return a + b
}
