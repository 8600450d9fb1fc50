package crdt

// PNCounter is a counter that can also be decremented: two G-Counters, P for
// increments and N for decrements (unlikes and exactly-once compensations).
// Value = ΣP − ΣN, clamped at zero. The zero value is an empty counter.
type PNCounter struct {
	P GCounter
	N GCounter
}

// Value is ΣP − ΣN, or 0 when N is ahead (a state that can be seen for a
// moment while replicas converge; counts shown to users are never negative).
func (c PNCounter) Value() uint64 {
	p, n := c.P.Value(), c.N.Value()
	if n >= p {
		return 0
	}
	return p - n
}

// LastUpdated is the latest Updated time of any slot in P or N (unix ms), or 0.
func (c PNCounter) LastUpdated() int64 {
	return max(c.P.LastUpdated(), c.N.LastUpdated())
}

// Increment adds n to replica r's P slot.
func (c *PNCounter) Increment(r ReplicaID, n uint64, nowMs int64) {
	c.P.Increment(r, n, nowMs)
}

// Decrement adds n to replica r's N slot.
func (c *PNCounter) Decrement(r ReplicaID, n uint64, nowMs int64) {
	c.N.Increment(r, n, nowMs)
}

// Merge folds o into c and reports whether c changed.
func (c *PNCounter) Merge(o PNCounter) bool {
	p := c.P.Merge(o.P)
	n := c.N.Merge(o.N)
	return p || n
}

// Delta returns the part of c that since does not cover.
func (c PNCounter) Delta(since PNCounter) PNCounter {
	return PNCounter{P: c.P.Delta(since.P), N: c.N.Delta(since.N)}
}

// Covers reports whether c ⊒ o.
func (c PNCounter) Covers(o PNCounter) bool {
	return c.P.Covers(o.P) && c.N.Covers(o.N)
}

// Equal reports whether c and o hold the same slots.
func (c PNCounter) Equal(o PNCounter) bool {
	return c.P.Equal(o.P) && c.N.Equal(o.N)
}

// IsZero reports whether c has no slots at all.
func (c PNCounter) IsZero() bool { return c.P.Len() == 0 && c.N.Len() == 0 }

// Clone returns a deep copy of c.
func (c PNCounter) Clone() PNCounter {
	return PNCounter{P: c.P.Clone(), N: c.N.Clone()}
}

// Contributions sums P − N per replica (clamped at zero per replica), for
// reporting which replica counted what.
func (c PNCounter) Contributions() map[ReplicaID]uint64 {
	out := make(map[ReplicaID]uint64, c.P.Len())
	for _, s := range c.P.slots {
		out[s.Replica] = s.Count
	}
	for _, s := range c.N.slots {
		p := out[s.Replica]
		if s.Count >= p {
			out[s.Replica] = 0
		} else {
			out[s.Replica] = p - s.Count
		}
	}
	return out
}

// String formats c for debugging.
func (c PNCounter) String() string { return "P" + c.P.String() + " N" + c.N.String() }
