package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// Block records hold many raw events, or many claims, in one Badger entry
// instead of one entry per event or claim: Badger's per-entry cost (a
// skiplist insert and a key copy) and msgpack's were a large part of the
// cost of a view (issue 9). The events of one ingest call, or of the small
// calls (single views) of one group commit ingested in one millisecond,
// share their ingest time and replica, which the event block's key holds;
// the claims a replica
// won in one dedup window during one group commit share their window and
// replica, which the claim block's key holds.
//
// Values are hand-rolled binary, not msgpack: a tag byte (eventBlockTag or
// claimBlockTag), a u32 BE count, then the elements, with uvarint-length-
// prefixed strings and varint times. Decoders check every length against
// the bytes left and against maxIDLen, so a corrupt record costs at most
// about its own size in allocations.

const (
	// claimBlockTag starts a claim block value under a 'b' key.
	claimBlockTag = 0xcb
	// minClaimBytes is the smallest encoded claim: a 1-byte video with its
	// length, a 1-byte user with its length, an empty event's length, a
	// 1-byte time.
	minClaimBytes = 6
	// eventBlockTag starts an event block value under an 'e' key. A single
	// event is a msgpack map, whose first byte is 0x80-0x8f or 0xde-0xdf, so
	// the two never meet.
	eventBlockTag = 0xeb
	// blockHeader is the tag byte and the u32 count.
	blockHeader = 5
	// minEventBytes is the smallest encoded event: fate, three 1-byte
	// lengths with 1-byte IDs, a 1-byte client time.
	minEventBytes = 8
)

// MaxBlockBytes bounds the value of a claim block or a counter-log record:
// an element that would take a block past it starts the next one. It is
// below Badger's value threshold (Open), so these blocks live in the LSM
// tree; about 40 claims of 10-byte IDs fit in one.
const MaxBlockBytes = 1000

// MaxEventBlockBytes bounds an event block's value the same way: about
// 1,000 events of 10-byte IDs, one large ingest call. A block over Badger's
// value threshold (1 KiB) goes to the value log, written once, with only a
// pointer in the LSM tree: compactions, which rewrite the tree level after
// level, then move pointers instead of the event log itself (issue 9: they
// took 40% of the CPU of sustained batch ingest). Blocks of fewer events
// (single views of one group commit and millisecond) stay in the tree.
// Expired events leave the value log by Sweeper and CollectValueLog.
const MaxEventBlockBytes = 32 << 10

// blockBuilder holds the closed blocks and the open one of a builder: a tag
// byte, a u32 BE count (written at close), then the elements.
type blockBuilder struct {
	full [][]byte // closed blocks, count written
	buf  []byte   // the open block
	n    int      // elements in buf
	all  int      // elements in full and buf
	hint int      // bytes to reserve for the next block
}

// open makes room for one element of need bytes at most, closing the open
// block if it would pass limit bytes, and returns the open block.
func (b *blockBuilder) open(tag byte, need, limit int) []byte {
	if b.buf != nil && len(b.buf)+need > limit {
		b.close()
	}
	if b.buf == nil {
		b.buf = make([]byte, blockHeader, min(max(b.hint, 64), limit))
		b.buf[0] = tag
		b.hint -= limit
	}
	return b.buf
}

// added records that buf, the open block, now holds one more element.
func (b *blockBuilder) added(buf []byte) {
	b.buf = buf
	b.n++
	b.all++
}

func (b *blockBuilder) close() {
	binary.BigEndian.PutUint32(b.buf[1:], uint32(b.n))
	b.full = append(b.full, b.buf)
	b.buf, b.n = nil, 0
}

// values closes the open block and hands every block over; the builder is
// empty again.
func (b *blockBuilder) values() [][]byte {
	if b.buf != nil {
		b.close()
	}
	v := b.full
	*b = blockBuilder{}
	return v
}

// EventBlock gathers raw events that share an ingest time and a replica into
// as few records as MaxEventBlockBytes allows. The zero value is empty and ready
// to use; it is not safe for concurrent use.
type EventBlock struct{ b blockBuilder }

// Grow sizes the first block for about n events whose IDs hold idBytes bytes
// in all.
func (b *EventBlock) Grow(n, idBytes int) { b.b.hint = n*12 + idBytes }

// Len is the number of events added.
func (b *EventBlock) Len() int { return b.b.all }

// Add appends one event.
func (b *EventBlock) Add(video, event, user string, clientMs int64, fate Fate) {
	buf := b.b.open(eventBlockTag, 1+stringLen(video)+stringLen(event)+stringLen(user)+binary.MaxVarintLen64, MaxEventBlockBytes)
	buf = append(buf, byte(fate))
	buf = appendString(buf, video)
	buf = appendString(buf, event)
	buf = appendString(buf, user)
	b.b.added(binary.AppendVarint(buf, clientMs))
}

// Mutations are the writes that log the block's events, ingested at ingestMs
// by replica, under unique keys until ttl passes; seq gives key suffixes
// unique per replica and millisecond (the sequence of EventMutation). The
// block hands its buffers over and is empty again.
func (b *EventBlock) Mutations(ingestMs int64, replica crdt.ReplicaID, seq func() uint64, ttl time.Duration) []Mutation {
	return b.b.mutations(prefixEvent, uint64(ingestMs), replica, seq, ttl)
}

func eventKey(ingestMs int64, replica crdt.ReplicaID, seq uint64) []byte {
	return blockKey(prefixEvent, uint64(ingestMs), replica, seq)
}

// blockKey is the 25-byte key prefix, at (an ingest time or a window),
// replica, seq, each u64 BE.
func blockKey(prefix byte, at uint64, replica crdt.ReplicaID, seq uint64) []byte {
	k := make([]byte, 0, 25)
	k = append(k, prefix)
	k = binary.BigEndian.AppendUint64(k, at)
	k = binary.BigEndian.AppendUint64(k, uint64(replica))
	return binary.BigEndian.AppendUint64(k, seq)
}

// mutations hands the builder's blocks over as writes under blockKey(prefix,
// at, replica, seq()) until ttl passes; the builder is empty again.
func (b *blockBuilder) mutations(prefix byte, at uint64, replica crdt.ReplicaID, seq func() uint64, ttl time.Duration) []Mutation {
	vals := b.values()
	muts := make([]Mutation, len(vals))
	for i, v := range vals {
		muts[i] = Mutation{Key: blockKey(prefix, at, replica, seq()), Value: v, TTL: ttl}
	}
	return muts
}

// stringLen is the encoded size of s: a uvarint length, then its bytes.
func stringLen(s string) int { return uvarintLen(uint64(len(s))) + len(s) }

// uvarintLen is the length of x's uvarint encoding.
func uvarintLen(x uint64) int {
	n := 1
	for ; x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// blockReader walks the elements of a block value; the first problem sticks
// in err and makes every later read return zero.
type blockReader struct {
	v   []byte
	off int
	err error
}

func (r *blockReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: block: %s at byte %d of %d", ErrCorrupt, what, r.off, len(r.v))
	}
}

func (r *blockReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.v[r.off:])
	if n <= 0 || overlong(r.v[r.off:], n) {
		r.fail("bad uvarint")
		return 0
	}
	r.off += n
	return x
}

func (r *blockReader) varint() int64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Varint(r.v[r.off:])
	if n <= 0 || overlong(r.v[r.off:], n) {
		r.fail("bad varint")
		return 0
	}
	r.off += n
	return x
}

// overlong reports whether the n-byte varint at the start of b has a
// shorter encoding (its last byte is 0): blocks are written canonical, and
// reading them so keeps every decoded block re-encoding to its own bytes.
func overlong(b []byte, n int) bool { return n > 1 && b[n-1] == 0 }

func (r *blockReader) byte() byte {
	if r.err != nil {
		return 0
	}
	if r.off >= len(r.v) {
		r.fail("truncated")
		return 0
	}
	c := r.v[r.off]
	r.off++
	return c
}

// id reads one length-prefixed ID of 1..maxIDLen bytes.
func (r *blockReader) id() string { return r.str(1) }

// str reads one length-prefixed string of minLen..maxIDLen bytes.
func (r *blockReader) str(minLen uint64) string { return r.strOf(r.uvarint(), minLen) }

// strOf reads the n bytes of a string of minLen..maxIDLen bytes whose length
// n was read already.
func (r *blockReader) strOf(n, minLen uint64) string {
	if r.err != nil {
		return ""
	}
	if n < minLen || n > maxIDLen || n > uint64(len(r.v)-r.off) {
		r.fail(fmt.Sprintf("ID of %d bytes", n))
		return ""
	}
	s := string(r.v[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

// blockCount checks v's header and returns its element count, which must
// fit the bytes that follow at min bytes per element.
func blockCount(v []byte, tag byte, min int) (int, error) {
	if len(v) < blockHeader || v[0] != tag {
		return 0, fmt.Errorf("%w: block header", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(v[1:])
	if uint64(n)*uint64(min) > uint64(len(v)-blockHeader) {
		return 0, fmt.Errorf("%w: block of %d elements in %d bytes", ErrCorrupt, n, len(v))
	}
	return int(n), nil
}

// decodeEventBlock calls fn with every event of the block v stored under an
// event key holding ingestMs and replica, until fn returns an error (which
// it returns as is). A malformed block is an error wrapping ErrCorrupt, found
// before fn sees any event of it.
func decodeEventBlock(v []byte, ingestMs int64, replica crdt.ReplicaID, fn func(Event) error) error {
	n, err := blockCount(v, eventBlockTag, minEventBytes)
	if err != nil {
		return err
	}
	evs := make([]Event, n)
	r := blockReader{v: v, off: blockHeader}
	for i := range evs {
		evs[i] = Event{
			IngestMs: ingestMs, Replica: replica,
			Fate: Fate(r.byte()), Video: r.id(), Event: r.id(), User: r.id(), ClientMs: r.varint(),
		}
	}
	if r.err != nil {
		return r.err
	}
	if r.off != len(v) {
		return fmt.Errorf("%w: event block: %d bytes after the last event", ErrCorrupt, len(v)-r.off)
	}
	for _, ev := range evs {
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// ClaimBlock gathers claims this replica won in one dedup window, each alone
// in its claim set (crdt.NewClaims), into as few records as MaxBlockBytes
// allows: one Badger entry for the claims of a group commit instead of one
// per counted view. A claim set that holds more (a peer's claim merged in, a
// compensation) is written on its own under its 'd' key; ForEachClaim gives
// both, and the reader merges them. The zero value is empty and ready to use;
// it is not safe for concurrent use.
type ClaimBlock struct{ b blockBuilder }

// Len is the number of claims added.
func (b *ClaimBlock) Len() int { return b.b.all }

// Add appends the claim of k made at ingestMs. Every claim of a block must
// be in the window its Mutations name.
func (b *ClaimBlock) Add(k ClaimKey, ingestMs int64) {
	buf := b.b.open(claimBlockTag, stringLen(k.Video)+stringLen(k.User)+stringLen(k.Event)+binary.MaxVarintLen64, MaxBlockBytes)
	buf = appendString(buf, k.Video)
	buf = appendString(buf, k.User)
	buf = appendString(buf, k.Event)
	b.b.added(binary.AppendVarint(buf, ingestMs))
}

// Mutations are the writes that store the block's claims, won in window by
// replica, under keys unique by seq (unique per replica) until ttl passes.
// The block hands its buffers over and is empty again.
func (b *ClaimBlock) Mutations(window uint64, replica crdt.ReplicaID, seq func() uint64, ttl time.Duration) []Mutation {
	return b.b.mutations(prefixClaimBlock, window, replica, seq, ttl)
}

func claimBlockKey(window uint64, replica crdt.ReplicaID, seq uint64) []byte {
	return blockKey(prefixClaimBlock, window, replica, seq)
}

// decodeClaimBlock calls fn with the claim set of every claim of the block
// stored under key, until fn returns an error (returned as is). A malformed
// block is an error wrapping ErrCorrupt, found before fn sees any claim of
// it.
func decodeClaimBlock(key, v []byte, fn func(ClaimKey, crdt.Claims) error) error {
	if len(key) != 25 || key[0] != prefixClaimBlock {
		return fmt.Errorf("%w: claim block key %x", ErrCorrupt, key)
	}
	window := binary.BigEndian.Uint64(key[1:])
	replica := crdt.ReplicaID(binary.BigEndian.Uint64(key[9:]))
	if replica == 0 {
		return fmt.Errorf("%w: claim block of replica 0", ErrCorrupt)
	}
	n, err := blockCount(v, claimBlockTag, minClaimBytes)
	if err != nil {
		return err
	}
	type claim struct {
		k  ClaimKey
		ms int64
	}
	claims := make([]claim, n)
	r := blockReader{v: v, off: blockHeader}
	for i := range claims {
		c := &claims[i]
		c.k = ClaimKey{Video: r.id(), User: r.id(), Event: r.str(0), Window: window}
		c.ms = r.varint()
		switch {
		case r.err != nil:
		case !validUser(c.k.User):
			r.fail("user ID with a '/'")
		case c.ms < 0:
			r.fail("negative ingest time")
		}
	}
	if r.err != nil {
		return r.err
	}
	if r.off != len(v) {
		return fmt.Errorf("%w: claim block: %d bytes after the last claim", ErrCorrupt, len(v)-r.off)
	}
	for _, c := range claims {
		if err := fn(c.k, crdt.NewClaims(replica, c.ms)); err != nil {
			return err
		}
	}
	return nil
}

// validUser reports whether a stored claim's user can be one: not holding
// the separator of a claim's subject (crdt.SplitSubject).
func validUser(u string) bool {
	for i := 0; i < len(u); i++ {
		if u[i] == '/' {
			return false
		}
	}
	return true
}
