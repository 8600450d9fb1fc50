package crdt

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Resolution is the width of a time bucket.
type Resolution uint8

// The resolutions of time buckets, finest first.
const (
	Minute Resolution = iota + 1
	Hour
	Day
)

// Resolutions lists every resolution, finest first.
var Resolutions = []Resolution{Minute, Hour, Day}

// Duration is the width of one bucket.
func (r Resolution) Duration() time.Duration {
	switch r {
	case Minute:
		return time.Minute
	case Hour:
		return time.Hour
	case Day:
		return 24 * time.Hour
	}
	return 0
}

// Ms is the width of one bucket in milliseconds.
func (r Resolution) Ms() int64 { return r.Duration().Milliseconds() }

// String names the resolution as the HTTP API spells it: minute, hour, day.
func (r Resolution) String() string {
	switch r {
	case Minute:
		return "minute"
	case Hour:
		return "hour"
	case Day:
		return "day"
	}
	return "resolution(" + strconv.Itoa(int(r)) + ")"
}

// ParseResolution is the inverse of Resolution.String.
func ParseResolution(s string) (Resolution, bool) {
	for _, r := range Resolutions {
		if r.String() == s {
			return r, true
		}
	}
	return 0, false
}

// letter is the resolution's one-letter tag in a bucket key.
func (r Resolution) letter() byte { return "?mhd"[min(int(r), 3)] }

// Index is the bucket of r holding unix time ms (UTC; buckets start at the
// epoch, so days run midnight to midnight UTC).
func (r Resolution) Index(ms int64) int64 {
	w := r.Ms()
	if ms < 0 {
		return (ms - w + 1) / w
	}
	return ms / w
}

// Start is the unix ms at which bucket i of r starts.
func (r Resolution) Start(i int64) int64 { return i * r.Ms() }

// BucketKey names one time bucket: the count of one event on one video
// during one minute, hour or day, on the ingesting node's clock.
type BucketKey struct {
	Video string
	Event string
	Res   Resolution
	Index int64 // Res.Index of the bucket's start
}

// bucketPrefix starts the Event part of a bucket's replication Key; event
// types are validated to [A-Za-z0-9_.:-], so no counter or claim key starts
// with it.
const bucketPrefix = '#'

// Key is the name under which the bucket replicates alongside the counters:
// Event is "#" + event + "/" + m|h|d + "/" + index.
func (b BucketKey) Key() Key {
	var buf [96]byte // usual names fit: one allocation, the string's
	return Key{Video: b.Video, Event: string(b.AppendEvent(buf[:0]))}
}

// AppendEvent appends the Event part of b.Key() to dst and returns the
// extended buffer: callers that look a bucket up by name can build the name
// without allocating.
func (b BucketKey) AppendEvent(dst []byte) []byte {
	dst = append(dst, bucketPrefix)
	dst = append(dst, b.Event...)
	dst = append(dst, '/', b.Res.letter(), '/')
	return strconv.AppendInt(dst, b.Index, 10)
}

// IsBucket reports whether k names a time bucket.
func (k Key) IsBucket() bool { return len(k.Event) > 0 && k.Event[0] == bucketPrefix }

// ParseBucketKey is the inverse of BucketKey.Key; ok is false if k does not
// name a well-formed bucket.
func ParseBucketKey(k Key) (b BucketKey, ok bool) {
	if !k.IsBucket() {
		return BucketKey{}, false
	}
	ev, rest, ok := strings.Cut(k.Event[1:], "/")
	if !ok || ev == "" || len(rest) < 3 || rest[1] != '/' {
		return BucketKey{}, false
	}
	var res Resolution
	for _, r := range Resolutions {
		if r.letter() == rest[0] {
			res = r
		}
	}
	if res == 0 {
		return BucketKey{}, false
	}
	idx, err := strconv.ParseInt(rest[2:], 10, 64)
	var buf [20]byte // the canonical form, without allocating: Key's writes it so
	if err != nil || string(strconv.AppendInt(buf[:0], idx, 10)) != rest[2:] {
		return BucketKey{}, false
	}
	return BucketKey{Video: k.Video, Event: ev, Res: res, Index: idx}, true
}

// BucketsOf returns the keys of the buckets, one per resolution, that an
// event of type event on video at unix time ms falls in.
func BucketsOf(video, event string, ms int64) [3]BucketKey {
	var out [3]BucketKey
	for i, r := range Resolutions {
		out[i] = BucketKey{Video: video, Event: event, Res: r, Index: r.Index(ms)}
	}
	return out
}

// String formats b for logs.
func (b BucketKey) String() string {
	return fmt.Sprintf("%s/%s/%s/%d", b.Video, b.Event, b.Res, b.Index)
}
