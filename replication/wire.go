package replication

import (
	"bytes"
	"fmt"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/tallyhq/tally/crdt"
)

// Wire format. A message is one msgpack array:
//
//	[version, kind, from, to, fromEpoch, toEpoch, body...]
//
// with the body by kind:
//
//	delta:       fromSeq, toSeq, head, acked, entries
//	ack:         fromSeq, toSeq
//	digest:      session, [sum...]
//	repair-data: session, page, final, reply, [bucket...], entries
//	repair-ack:  session, page, reply
//
// entries is an array of [video, event, state], state being crdt's canonical
// PN-Counter encoding. Integers are unsigned and written in their shortest
// form; empty arrays decode as nil slices.
//
// msgpack v5.4.1 trusts the lengths it reads, so the decoder here reads every
// length itself and checks it against a fixed limit and against the bytes
// left before allocating anything.

// wireVersion is the first element of every encoded message.
const wireVersion = 1

// minEntryBytes is the smallest encoded entry: array header, two empty
// strings and an empty PN-Counter (three bytes).
const minEntryBytes = 6

var bodyFields = [...]int{KindDelta: 5, KindAck: 2, KindDigest: 2, KindRepairData: 6, KindRepairAck: 3}

const headerFields = 6

// EncodeMessage encodes m after checking it against the protocol's rules and
// limits. The result is at most MaxFrameBytes long.
func EncodeMessage(m Message) ([]byte, error) {
	return AppendMessage(nil, m)
}

// AppendMessage appends the encoding of m to b (see EncodeMessage).
func AppendMessage(b []byte, m Message) ([]byte, error) {
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Kind, err)
	}
	start := len(b)
	buf := bytes.NewBuffer(b)
	enc := msgpack.GetEncoder()
	defer msgpack.PutEncoder(enc)
	enc.Reset(buf)
	if err := encodeMessage(enc, &m); err != nil {
		return nil, fmt.Errorf("encode %s: %w", m.Kind, err)
	}
	out := buf.Bytes()
	if n := len(out) - start; n > MaxFrameBytes {
		return nil, fmt.Errorf("encode %s: %w: %d bytes, limit %d", m.Kind, ErrMalformed, n, MaxFrameBytes)
	}
	return out, nil
}

func encodeMessage(enc *msgpack.Encoder, m *Message) error {
	w := wireWriter{enc: enc}
	w.arrayLen(headerFields + bodyFields[m.Kind])
	w.uint(wireVersion)
	w.uint(uint64(m.Kind))
	w.str(string(m.From))
	w.str(string(m.To))
	w.uint(m.FromEpoch)
	w.uint(m.ToEpoch)
	switch m.Kind {
	case KindDelta:
		w.uint(m.FromSeq)
		w.uint(m.ToSeq)
		w.uint(m.Head)
		w.uint(m.Acked)
		w.entries(m.Entries)
	case KindAck:
		w.uint(m.FromSeq)
		w.uint(m.ToSeq)
	case KindDigest:
		w.uint(m.Session)
		w.arrayLen(len(m.Sums))
		for _, s := range m.Sums {
			w.uint(s)
		}
	case KindRepairData:
		w.uint(m.Session)
		w.uint(uint64(m.Page))
		w.bool(m.Final)
		w.bool(m.Reply)
		w.arrayLen(len(m.Buckets))
		for _, b := range m.Buckets {
			w.uint(uint64(b))
		}
		w.entries(m.Entries)
	case KindRepairAck:
		w.uint(m.Session)
		w.uint(uint64(m.Page))
		w.bool(m.Reply)
	}
	return w.err
}

// wireWriter keeps the first error so that encoding reads straight through.
type wireWriter struct {
	enc *msgpack.Encoder
	err error
}

func (w *wireWriter) arrayLen(n int) {
	if w.err == nil {
		w.err = w.enc.EncodeArrayLen(n)
	}
}

func (w *wireWriter) uint(v uint64) {
	if w.err == nil {
		w.err = w.enc.EncodeUint(v)
	}
}

func (w *wireWriter) str(s string) {
	if w.err == nil {
		w.err = w.enc.EncodeString(s)
	}
}

func (w *wireWriter) bool(v bool) {
	if w.err == nil {
		w.err = w.enc.EncodeBool(v)
	}
}

func (w *wireWriter) entries(es []Entry) {
	w.arrayLen(len(es))
	for i := range es {
		w.arrayLen(3)
		w.str(es[i].Key.Video)
		w.str(es[i].Key.Event)
		if w.err == nil {
			w.err = es[i].State.EncodeMsgpack(w.enc)
		}
	}
}

// DecodeMessage decodes one message written by EncodeMessage and checks it
// against the protocol's rules. Errors wrap ErrMalformed. However hostile the
// input, the decoder allocates at most a small multiple of len(b).
func DecodeMessage(b []byte) (Message, error) {
	if len(b) > MaxFrameBytes {
		return Message{}, fmt.Errorf("decode message: %w: %d bytes, limit %d", ErrMalformed, len(b), MaxFrameBytes)
	}
	r := bytes.NewReader(b) // an io.ByteScanner: the decoder reads it directly, unbuffered
	dec := msgpack.GetDecoder()
	defer msgpack.PutDecoder(dec)
	dec.Reset(r)
	w := wireReader{dec: dec, r: r}
	m, err := w.message()
	if err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	if r.Len() != 0 {
		return Message{}, fmt.Errorf("decode message: %w: %d trailing bytes", ErrMalformed, r.Len())
	}
	if err := m.check(); err != nil {
		return Message{}, fmt.Errorf("decode message: %w", err)
	}
	return m, nil
}

type wireReader struct {
	dec *msgpack.Decoder
	r   *bytes.Reader
}

func (w *wireReader) message() (Message, error) {
	var m Message
	n, err := w.arrayLen("message", headerFields+6, 1)
	if err != nil {
		return m, err
	}
	if n < 2 {
		return m, fmt.Errorf("%w: message of %d fields", ErrMalformed, n)
	}
	if v, err := w.uint("version"); err != nil {
		return m, err
	} else if v != wireVersion {
		return m, fmt.Errorf("%w: wire version %d, want %d", ErrMalformed, v, wireVersion)
	}
	k, err := w.uint("kind")
	if err != nil {
		return m, err
	}
	if k < uint64(KindDelta) || k > uint64(KindRepairAck) {
		return m, fmt.Errorf("%w: unknown kind %d", ErrMalformed, k)
	}
	m.Kind = Kind(k)
	if want := headerFields + bodyFields[m.Kind]; n != want {
		return m, fmt.Errorf("%w: %s of %d fields, want %d", ErrMalformed, m.Kind, n, want)
	}
	from, err := w.str("from", MaxNodeIDBytes)
	if err != nil {
		return m, err
	}
	to, err := w.str("to", MaxNodeIDBytes)
	if err != nil {
		return m, err
	}
	m.From, m.To = NodeID(from), NodeID(to)
	if m.FromEpoch, err = w.uint("from epoch"); err != nil {
		return m, err
	}
	if m.ToEpoch, err = w.uint("to epoch"); err != nil {
		return m, err
	}
	switch m.Kind {
	case KindDelta:
		for _, f := range []struct {
			p    *uint64
			name string
		}{{&m.FromSeq, "from seq"}, {&m.ToSeq, "to seq"}, {&m.Head, "head"}, {&m.Acked, "acked"}} {
			if *f.p, err = w.uint(f.name); err != nil {
				return m, err
			}
		}
		m.Entries, err = w.entries()
	case KindAck:
		if m.FromSeq, err = w.uint("from seq"); err != nil {
			return m, err
		}
		m.ToSeq, err = w.uint("to seq")
	case KindDigest:
		if m.Session, err = w.uint("session"); err != nil {
			return m, err
		}
		m.Sums, err = w.uints("sums")
	case KindRepairData:
		if m.Session, err = w.uint("session"); err != nil {
			return m, err
		}
		if m.Page, err = w.uint32("page"); err != nil {
			return m, err
		}
		if m.Final, err = w.bool("final"); err != nil {
			return m, err
		}
		if m.Reply, err = w.bool("reply"); err != nil {
			return m, err
		}
		var bs []uint64
		if bs, err = w.uints("buckets"); err != nil {
			return m, err
		}
		if len(bs) > 0 {
			m.Buckets = make([]uint32, len(bs))
			for i, b := range bs {
				if b >= MaxBuckets {
					return m, fmt.Errorf("%w: bucket %d out of range", ErrMalformed, b)
				}
				m.Buckets[i] = uint32(b)
			}
		}
		m.Entries, err = w.entries()
	case KindRepairAck:
		if m.Session, err = w.uint("session"); err != nil {
			return m, err
		}
		if m.Page, err = w.uint32("page"); err != nil {
			return m, err
		}
		m.Reply, err = w.bool("reply")
	}
	return m, err
}

// arrayLen reads an array header and checks it against max and against the
// input left, given that every element takes at least minElem bytes.
func (w *wireReader) arrayLen(what string, max, minElem int) (int, error) {
	n, err := w.dec.DecodeArrayLen()
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	if n < 0 {
		return 0, fmt.Errorf("%w: %s: nil array", ErrMalformed, what)
	}
	if n > max {
		return 0, fmt.Errorf("%w: %s: %d elements, limit %d", ErrMalformed, what, n, max)
	}
	if n > w.r.Len()/minElem {
		return 0, fmt.Errorf("%w: %s: %d elements in %d bytes", ErrMalformed, what, n, w.r.Len())
	}
	return n, nil
}

func (w *wireReader) uint(what string) (uint64, error) {
	v, err := w.dec.DecodeUint64()
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return v, nil
}

func (w *wireReader) uint32(what string) (uint32, error) {
	v, err := w.uint(what)
	if err != nil {
		return 0, err
	}
	if v > 1<<32-1 {
		return 0, fmt.Errorf("%w: %s: %d out of range", ErrMalformed, what, v)
	}
	return uint32(v), nil
}

func (w *wireReader) bool(what string) (bool, error) {
	v, err := w.dec.DecodeBool()
	if err != nil {
		return false, fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return v, nil
}

// str reads a string of at most max bytes, checking its length before
// allocating.
func (w *wireReader) str(what string, max int) (string, error) {
	n, err := w.dec.DecodeBytesLen()
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	if n < 0 {
		return "", fmt.Errorf("%w: %s: nil string", ErrMalformed, what)
	}
	if n > max || n > w.r.Len() {
		return "", fmt.Errorf("%w: %s: %d bytes (limit %d, %d left)", ErrMalformed, what, n, max, w.r.Len())
	}
	if n == 0 {
		return "", nil
	}
	buf := make([]byte, n)
	if err := w.dec.ReadFull(buf); err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrMalformed, what, err)
	}
	return string(buf), nil
}

func (w *wireReader) uints(what string) ([]uint64, error) {
	n, err := w.arrayLen(what, MaxBuckets, 1)
	if err != nil || n == 0 {
		return nil, err
	}
	out := make([]uint64, n)
	for i := range out {
		if out[i], err = w.uint(what); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (w *wireReader) entries() ([]Entry, error) {
	n, err := w.arrayLen("entries", MaxEntries, minEntryBytes)
	if err != nil || n == 0 {
		return nil, err
	}
	// An Entry takes ~13 times its smallest encoding in memory: grow as the
	// input proves itself rather than trusting n.
	out := make([]Entry, 0, min(n, 64))
	for i := 0; i < n; i++ {
		var e Entry
		if err := w.entry(&e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}

func (w *wireReader) entry(e *Entry) error {
	n, err := w.arrayLen("entry", 3, 1)
	if err != nil {
		return err
	}
	if n != 3 {
		return fmt.Errorf("%w: entry of %d fields, want 3", ErrMalformed, n)
	}
	if e.Key.Video, err = w.str("video", MaxKeyPartBytes); err != nil {
		return err
	}
	if e.Key.Event, err = w.str("event", MaxKeyPartBytes); err != nil {
		return err
	}
	var st crdt.PNCounter
	if err := st.DecodeMsgpack(w.dec); err != nil { // bounded by crdt.MaxSlots, grows with input
		return fmt.Errorf("%w: state: %w", ErrMalformed, err)
	}
	e.State = st
	return nil
}
