package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/tallyhq/tally/crdt"
)

// An event block holds the raw events of one ingest call in one Badger entry
// instead of one entry per event: Badger's per-entry cost (a skiplist insert
// and a key copy) and msgpack's were a large part of the cost of a batch of
// views (issue 9). The events of one call share their ingest time and
// replica, which the key holds.
//
// The value is hand-rolled binary, not msgpack: the tag byte eventBlockTag, a
// u32 BE count, then per event its fate byte, three uvarint-length-prefixed
// IDs (video, event type, user) and the client's time as a varint. The
// decoder checks every length against the bytes left and against maxIDLen,
// so a corrupt record costs at most its own size in allocations.

const (
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

// MaxBlockBytes bounds an event block's value: an event that would take a
// block past it starts the next one. It is below Badger's value threshold
// (Open), so blocks live in the LSM tree and go by TTL in compaction, as
// single events do; about 30 events of 10-byte IDs fit in one.
const MaxBlockBytes = 1000

// EventBlock gathers the raw events of one ingest call, which share an ingest
// time and a replica, into as few records as MaxBlockBytes allows. The zero
// value is empty and ready to use; it is not safe for concurrent use.
type EventBlock struct {
	full [][]byte // closed blocks, count written
	buf  []byte   // the open block: header, then events
	n    int      // events in buf
	all  int      // events in full and buf
	hint int      // bytes to reserve for the first block
}

// Grow sizes the first block for about n events whose IDs hold idBytes bytes
// in all.
func (b *EventBlock) Grow(n, idBytes int) { b.hint = n*12 + idBytes }

// Len is the number of events added.
func (b *EventBlock) Len() int { return b.all }

// Add appends one event.
func (b *EventBlock) Add(video, event, user string, clientMs int64, fate Fate) {
	need := 1 + stringLen(video) + stringLen(event) + stringLen(user) + binary.MaxVarintLen64
	if b.buf != nil && len(b.buf)+need > MaxBlockBytes {
		b.close()
	}
	if b.buf == nil {
		b.buf = make([]byte, blockHeader, min(max(b.hint, 64), MaxBlockBytes))
		b.buf[0] = eventBlockTag
		b.hint -= MaxBlockBytes
	}
	buf := append(b.buf, byte(fate))
	buf = appendString(buf, video)
	buf = appendString(buf, event)
	buf = appendString(buf, user)
	b.buf = binary.AppendVarint(buf, clientMs)
	b.n++
	b.all++
}

func (b *EventBlock) close() {
	binary.BigEndian.PutUint32(b.buf[1:], uint32(b.n))
	b.full = append(b.full, b.buf)
	b.buf, b.n = nil, 0
}

// Mutations are the writes that log the block's events, ingested at ingestMs
// by replica, under unique keys until ttl passes; seq gives key suffixes
// unique per replica and millisecond (the sequence of EventMutation). The
// block hands its buffers over and is empty again.
func (b *EventBlock) Mutations(ingestMs int64, replica crdt.ReplicaID, seq func() uint64, ttl time.Duration) []Mutation {
	if b.buf != nil {
		b.close()
	}
	muts := make([]Mutation, len(b.full))
	for i, v := range b.full {
		muts[i] = Mutation{Key: eventKey(ingestMs, replica, seq()), Value: v, TTL: ttl}
	}
	*b = EventBlock{}
	return muts
}

func eventKey(ingestMs int64, replica crdt.ReplicaID, seq uint64) []byte {
	k := make([]byte, 0, 25)
	k = append(k, prefixEvent)
	k = binary.BigEndian.AppendUint64(k, uint64(ingestMs))
	k = binary.BigEndian.AppendUint64(k, uint64(replica))
	return binary.BigEndian.AppendUint64(k, seq)
}

// stringLen is the encoded size of s: a uvarint length, then its bytes.
func stringLen(s string) int {
	n := len(s) + 1
	for x := len(s); x >= 0x80; x >>= 7 {
		n++
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// blockReader walks the events of a block value; the first problem sticks
// in err and makes every later read return zero.
type blockReader struct {
	v   []byte
	off int
	err error
}

func (r *blockReader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: event block: %s at byte %d of %d", ErrCorrupt, what, r.off, len(r.v))
	}
}

func (r *blockReader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	x, n := binary.Uvarint(r.v[r.off:])
	if n <= 0 {
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
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.off += n
	return x
}

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
func (r *blockReader) id() string {
	n := r.uvarint()
	if r.err != nil {
		return ""
	}
	if n == 0 || n > maxIDLen || n > uint64(len(r.v)-r.off) {
		r.fail(fmt.Sprintf("ID of %d bytes", n))
		return ""
	}
	s := string(r.v[r.off : r.off+int(n)])
	r.off += int(n)
	return s
}

// decodeEventBlock calls fn with every event of the block v stored under an
// event key holding ingestMs and replica, until fn returns an error (which
// it returns as is). A malformed block is an error wrapping ErrCorrupt, found
// before fn sees any event of it.
func decodeEventBlock(v []byte, ingestMs int64, replica crdt.ReplicaID, fn func(Event) error) error {
	if len(v) < blockHeader || v[0] != eventBlockTag {
		return fmt.Errorf("%w: event block header", ErrCorrupt)
	}
	n := binary.BigEndian.Uint32(v[1:])
	if uint64(n)*minEventBytes > uint64(len(v)-blockHeader) {
		return fmt.Errorf("%w: event block of %d events in %d bytes", ErrCorrupt, n, len(v))
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
