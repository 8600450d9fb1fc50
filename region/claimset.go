package region

// claimSet is the claim slots of one window in one claim shard: an
// open-addressing hash table with linear probing, keyed by the claim's
// 128-bit hash (claimID.h), which is uniform already, so the table hashes
// nothing. It replaced a Go map of claimID to claimSlot: there, a claim not
// seen before (most views) cost two cache misses, the probe of the map's
// control word and the write of the slot elsewhere in its group, and in a
// table of millions each was a trip to memory; here the probe reads the
// entry the claim then goes into (issue 9: 704 -> 512 ns a claim over 3M
// new claims). Claims are never removed one by
// one (a window goes whole: claimTable.expire), so the table needs no
// tombstones.
type claimSet struct {
	entries []claimEntry // a power of two long, or empty
	n       int          // entries in use
}

// claimEntry is one slot of a claimSet. An entry whose id is zero is free:
// claimTable.id makes id[1] odd, so no claim has that id.
type claimEntry struct {
	id   [2]uint64
	slot claimSlot
}

// claimSetMinLen is the length of a claimSet's first table.
const claimSetMinLen = 16

// home is where the probe for id starts. Its second word picks the place:
// the first picks the shard (claimTable.id), and the low bit is always set.
func (s *claimSet) home(id [2]uint64) int { return int(id[1]>>1) & (len(s.entries) - 1) }

// get returns id's slot, if the set has one.
func (s *claimSet) get(id [2]uint64) (claimSlot, bool) {
	if len(s.entries) == 0 {
		return claimSlot{}, false
	}
	mask := len(s.entries) - 1
	for i := s.home(id); ; i = (i + 1) & mask {
		switch e := &s.entries[i]; e.id {
		case id:
			return e.slot, true
		case [2]uint64{}:
			return claimSlot{}, false
		}
	}
}

// ref returns id's slot to read or change, adding a zero slot if the set
// has none (found false). The pointer is good until the next ref.
func (s *claimSet) ref(id [2]uint64) (slot *claimSlot, found bool) {
	if 4*(s.n+1) > 3*len(s.entries) { // at most 3/4 full: short probes
		s.grow()
	}
	mask := len(s.entries) - 1
	for i := s.home(id); ; i = (i + 1) & mask {
		switch e := &s.entries[i]; e.id {
		case id:
			return &e.slot, true
		case [2]uint64{}:
			e.id = id
			s.n++
			return &e.slot, false
		}
	}
}

// grow doubles the table (or makes the first one) and places every entry
// again.
func (s *claimSet) grow() {
	old := s.entries
	s.entries = make([]claimEntry, max(claimSetMinLen, 2*len(old)))
	prefault(s.entries)
	mask := len(s.entries) - 1
	for _, e := range old {
		if e.id == [2]uint64{} {
			continue
		}
		i := s.home(e.id)
		for s.entries[i].id != [2]uint64{} {
			i = (i + 1) & mask
		}
		s.entries[i] = e
	}
}
