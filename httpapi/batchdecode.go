package httpapi

import (
	"bytes"
	"encoding/json"
)

// decodeEventsFast is the fast path of decodeEventsBody, for the batch
// bodies clients actually send: an array of at most MaxBatchEvents objects
// whose keys are exactly "videoId", "userId", "timestamp" and "event", with
// the IDs and the event type plain strings (printable ASCII, no escapes) and
// the timestamp a plain integer, a plain string or null. It decodes such a
// body in one pass, with one allocation for the events and one per distinct
// ID (a video repeated by consecutive events, as in a batch on a hot video,
// is allocated once; well-known event types not at all). encoding/json's
// reflection costs several times more per event (issue 9).
//
// The IDs are copies, not slices of the body: the node keeps video and user
// IDs in its tables for as long as their counters and claims live, and a
// slice would pin the whole body. A timestamp is a slice of the body; it is
// parsed before the request ends.
//
// ok is false for anything else, valid or not (escapes, other keys, other
// types, fractions, too many events, bad syntax): the caller then decodes
// with encoding/json, which has the last word on what the body means and on
// the error. So decodeEventsBody never answers differently from
// decodeEventsJSON; FuzzDecodeEventsFast holds it to that.
func decodeEventsFast(body []byte) (events []batchEvent, ok bool) {
	d := fastDecoder{b: body}
	d.space()
	if !d.eat('[') {
		return nil, false
	}
	// Every event opens a brace: size the slice once.
	events = make([]batchEvent, 0, min(bytes.Count(body, []byte("{")), MaxBatchEvents))
	d.space()
	if d.eat(']') {
		return events, d.end()
	}
	var lastVideo string // the previous event's video, reused when repeated
	for {
		if len(events) == MaxBatchEvents {
			return nil, false // encoding/json answers 413
		}
		var ev batchEvent
		d.space()
		if !d.eat('{') {
			return nil, false
		}
		d.space()
		if !d.eat('}') {
			for {
				d.space()
				key, ok := d.plainString()
				if !ok {
					return nil, false
				}
				d.space()
				if !d.eat(':') {
					return nil, false
				}
				d.space()
				switch string(key) {
				case "videoId":
					s, ok := d.plainString()
					if !ok {
						return nil, false
					}
					if string(s) != lastVideo {
						lastVideo = string(s)
					}
					ev.VideoID = lastVideo
				case "userId":
					s, ok := d.plainString()
					if !ok {
						return nil, false
					}
					ev.UserID = string(s)
				case "event":
					s, ok := d.plainString()
					if !ok {
						return nil, false
					}
					ev.Event = eventName(s)
				case "timestamp":
					raw, ok := d.plainTimestamp()
					if !ok {
						return nil, false
					}
					ev.Timestamp = raw
				default:
					return nil, false
				}
				d.space()
				if d.eat('}') {
					break
				}
				if !d.eat(',') {
					return nil, false
				}
			}
		}
		events = append(events, ev)
		d.space()
		if d.eat(']') {
			return events, d.end()
		}
		if !d.eat(',') {
			return nil, false
		}
	}
}

// decodeViewFast is the fast path of decodeViewBody, for the bodies clients
// actually send: one object whose keys are "userId", with a plain string
// (printable ASCII, no escapes), and optionally "timestamp", a plain
// integer, a plain string or null. It returns the user (a copy: the node
// keeps it) and the raw timestamp (a slice of body), as encoding/json would
// decode them into a viewRequest. ok is false for anything else, valid or
// not (no userId, escapes, other keys, other types, bad syntax): the caller
// then decodes with encoding/json, which has the last word on what the body
// means and on the error. FuzzDecodeViewFast holds it to that.
func decodeViewFast(body []byte) (user string, timestamp json.RawMessage, ok bool) {
	d := fastDecoder{b: body}
	d.space()
	if !d.eat('{') {
		return "", nil, false
	}
	var userID []byte
	haveUser := false
	for {
		d.space()
		key, ok := d.plainString()
		if !ok {
			return "", nil, false
		}
		d.space()
		if !d.eat(':') {
			return "", nil, false
		}
		d.space()
		switch string(key) {
		case "userId":
			// A repeated key: the last one wins, as in encoding/json.
			if userID, ok = d.plainString(); !ok {
				return "", nil, false
			}
			haveUser = true
		case "timestamp":
			if timestamp, ok = d.plainTimestamp(); !ok {
				return "", nil, false
			}
		default:
			return "", nil, false
		}
		d.space()
		if d.eat('}') {
			break
		}
		if !d.eat(',') {
			return "", nil, false
		}
	}
	if !haveUser || !d.end() {
		return "", nil, false
	}
	return string(userID), timestamp, true
}

// eventName is s as a string, without allocating for the usual types.
func eventName(s []byte) string {
	switch string(s) {
	case "":
		return ""
	case "view":
		return "view"
	case "like":
		return "like"
	case "unlike":
		return "unlike"
	case "share":
		return "share"
	}
	return string(s)
}

// fastDecoder walks a JSON body for decodeEventsFast.
type fastDecoder struct {
	b   []byte
	off int
}

// space skips JSON whitespace.
func (d *fastDecoder) space() {
	for d.off < len(d.b) {
		switch d.b[d.off] {
		case ' ', '\t', '\n', '\r':
			d.off++
		default:
			return
		}
	}
}

// eat consumes c if it is next.
func (d *fastDecoder) eat(c byte) bool {
	if d.off < len(d.b) && d.b[d.off] == c {
		d.off++
		return true
	}
	return false
}

// end reports whether only whitespace is left.
func (d *fastDecoder) end() bool {
	d.space()
	return d.off == len(d.b)
}

// plainString reads a string of printable ASCII without escapes and returns
// its contents (a slice of the body).
func (d *fastDecoder) plainString() ([]byte, bool) {
	if !d.eat('"') {
		return nil, false
	}
	start := d.off
	for d.off < len(d.b) {
		c := d.b[d.off]
		switch {
		case c == '"':
			d.off++
			return d.b[start : d.off-1], true
		case c < 0x20 || c > 0x7e || c == '\\':
			return nil, false
		}
		d.off++
	}
	return nil, false
}

// plainTimestamp reads an integer (JSON grammar: no leading zeros, no
// fraction or exponent), a plain string or null, and returns its raw bytes,
// as encoding/json would give them to a json.RawMessage.
func (d *fastDecoder) plainTimestamp() (json.RawMessage, bool) {
	start := d.off
	switch {
	case d.off < len(d.b) && d.b[d.off] == '"':
		if _, ok := d.plainString(); !ok {
			return nil, false
		}
	case bytes.HasPrefix(d.b[d.off:], []byte("null")):
		d.off += len("null")
	default:
		d.eat('-')
		digits := d.off
		for d.off < len(d.b) && d.b[d.off] >= '0' && d.b[d.off] <= '9' {
			d.off++
		}
		if n := d.off - digits; n == 0 || n > 1 && d.b[digits] == '0' {
			return nil, false
		}
	}
	// Whatever follows must end the value (the caller wants ',' or '}'
	// after optional space): "1.5", "1e3", "nullx" go to encoding/json.
	if d.off < len(d.b) {
		switch d.b[d.off] {
		case ',', '}', ' ', '\t', '\n', '\r':
		default:
			return nil, false
		}
	}
	return d.b[start:d.off:d.off], true
}
