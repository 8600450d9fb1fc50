package httpapi

import (
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// sameDecoding fails t unless decodeEventsBody (fast path first) and
// decodeEventsJSON give body exactly the same answer: equal events, or
// errors with the same status, code and text.
func sameDecoding(t *testing.T, body []byte) {
	t.Helper()
	got, gotErr := decodeEventsBody(body)
	want, wantErr := decodeEventsJSON(body)
	switch {
	case gotErr == nil && wantErr == nil:
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\nfast path %#v\nencoding/json %#v", body, got, want)
		}
	case gotErr == nil || wantErr == nil:
		t.Fatalf("%q: decodeEventsBody error %v, encoding/json error %v", body, gotErr, wantErr)
	default:
		var g, w *apiError
		if !errors.As(gotErr, &g) || !errors.As(wantErr, &w) || *g != *w || gotErr.Error() != wantErr.Error() {
			t.Fatalf("%q: decodeEventsBody error %#v, encoding/json error %#v", body, gotErr, wantErr)
		}
	}
}

// decodeSeeds are bodies for the table test and the fuzz corpus: the
// shapes clients send, and near misses of every rule of the fast path.
var decodeSeeds = []string{
	`[]`, ` [ ] `, "\t[\r\n]\n", `[{}]`, `[{},{}]`, `[ {} , { } ]`,
	`[{"videoId":"v1","userId":"u1","timestamp":1763787600000}]`,
	"[\n {\"videoId\": \"v1\", \"userId\": \"u1\"},\n {\"userId\":\"u2\",\"videoId\":\"v 2\",\"timestamp\":\"2026-11-22T05:00:00Z\"}\n]",
	`[{"videoId":"v","timestamp":null}]`, `[{"videoId":"v","timestamp":null }]`,
	`[{"videoId":"v","timestamp":-5}]`, `[{"timestamp":0}]`, `[{"timestamp":-0}]`,
	`[{"videoId":"v","videoId":"w"}]`, // the last one wins, as in encoding/json
	`[{"timestamp":1,"timestamp":null}]`, `[{"timestamp":"x","timestamp":2}]`,
	`[{"videoId":"v","userId":"u","event":"like"},{"videoId":"v","userId":"u","event":"unlike"},{"videoId":"v","userId":"u","event":"share","timestamp":1763787600000}]`,
	`[{"event":"view"},{"event":""},{"event":"sh4re"},{"event":"` + strings.Repeat("e", 40) + `"}]`,
	`[{"videoId":"hot","userId":"a"},{"videoId":"hot","userId":"b"},{"videoId":"v2","userId":"c"},{"videoId":"hot","userId":"d"}]`,
	`[{"videoId":"v\u0031"}]`, `[{"videoId":"v\"w"}]`, `[{"event":"\u0000"}]`,
	`[{"videoID":"v"}]`, `[{"VIDEOID":"v"}]`, `[{"Event":"like"}]`, // encoding/json matches keys without case
	`[{"videoId":"v","extra":1}]`, `[{"videoId":1}]`, `[{"videoId":null}]`, `[{"event":null}]`, `[{"event":5}]`,
	`[{"timestamp":1.5}]`, `[{"timestamp":1e3}]`, `[{"timestamp":1E3}]`, `[{"timestamp":01}]`, `[{"timestamp":-}]`,
	`[{"timestamp":--1}]`, `[{"timestamp":1-2}]`, `[{"timestamp":true}]`, `[{"timestamp":nullx}]`, `[{"timestamp":nul}]`,
	`[{"timestamp":{}}]`, `[{"timestamp":[1]}]`, `[{"timestamp":"\u0032"}]`, `[{"timestamp":99999999999999999999999}]`,
	`[{"videoId":"v"}`, `[{"videoId":"v"}] x`, `[{"videoId":"v"}][]`, `[{"videoId":"v"},]`, `[{"videoId":"v",}]`,
	`[{"videoId" "v"}]`, `[{"videoId":"v" "userId":"u"}]`, `[{,}]`, `[,]`, `[`, `]`, ``, ` `, `[1]`, `[null]`, `[[]]`, `{}`,
	`["` + strings.Repeat("a", 200) + `"]`,
	"[{\"videoId\":\"caf\xc3\xa9\"}]", "[{\"videoId\":\"\xff\"}]", "[{\"videoId\":\"a\x7fb\"}]", "[{\"videoId\":\"a\tb\"}]",
	"\xef\xbb\xbf[]", "[\f]", "[{}]\x00",
}

func TestDecodeEventsFast(t *testing.T) {
	taken := 0
	for _, body := range decodeSeeds {
		if _, ok := decodeEventsFast([]byte(body)); ok {
			taken++
		}
		sameDecoding(t, []byte(body))
	}
	// The bodies clients send take the fast path; the near misses do not.
	for _, body := range []string{decodeSeeds[6], decodeSeeds[7], decodeSeeds[16], string(batchBody(100, false))} {
		if _, ok := decodeEventsFast([]byte(body)); !ok {
			t.Errorf("fast path declined %.80q", body)
		}
	}
	for _, body := range []string{`[{"videoID":"v"}]`, `[{"videoId":"v\u0031"}]`, `[{"timestamp":1.5}]`, `[{"videoId":"v","extra":1}]`} {
		if _, ok := decodeEventsFast([]byte(body)); ok {
			t.Errorf("fast path took %q", body)
		}
	}
	t.Logf("fast path took %d of %d bodies", taken, len(decodeSeeds))

	// Over MaxBatchEvents: encoding/json answers (413), the same as before.
	many := []byte("[" + strings.Repeat(`{"videoId":"v"},`, MaxBatchEvents) + "{}]")
	if _, ok := decodeEventsFast(many); ok {
		t.Fatalf("fast path took %d events", MaxBatchEvents+1)
	}
	sameDecoding(t, many)
	if _, err := decodeEventsBody(many); classify(err).Code != CodeTooManyEvents {
		t.Fatalf("%d events: %v, want %s", MaxBatchEvents+1, err, CodeTooManyEvents)
	}
	exactly := []byte("[" + strings.Repeat(`{"videoId":"v"},`, MaxBatchEvents-1) + "{}]")
	if ev, ok := decodeEventsFast(exactly); !ok || len(ev) != MaxBatchEvents {
		t.Fatalf("fast path on %d events: %d, %v", MaxBatchEvents, len(ev), ok)
	}
}

// The IDs the fast path returns do not pin the body (the node keeps them),
// and a video repeated by consecutive events is one string.
func TestDecodeEventsFastCopiesIDs(t *testing.T) {
	body := []byte(`[{"videoId":"hot","userId":"u1","event":"share","timestamp":5},{"videoId":"hot","userId":"u2"}]`)
	events, ok := decodeEventsFast(body)
	if !ok || len(events) != 2 {
		t.Fatalf("fast path: %v, %d events", ok, len(events))
	}
	for i := range body {
		if body[i] != '[' && body[i] != ']' {
			body[i] = 'X'
		}
	}
	if events[0].VideoID != "hot" || events[0].UserID != "u1" || events[0].Event != "share" || events[1].UserID != "u2" {
		t.Fatalf("events changed with the body: %+v", events)
	}

	// Allocations: the events, one user ID each, one video for a run of
	// repeats, nothing for well-known event types.
	const n = 1000
	hot := batchBody(n, true)
	allocs := testing.AllocsPerRun(20, func() {
		if _, ok := decodeEventsFast(hot); !ok {
			t.Fatal("fast path declined the hot batch")
		}
	})
	if allocs > n+2 {
		t.Fatalf("%v allocations for %d events on one video; want at most %d", allocs, n, n+2)
	}
}

// FuzzDecodeEventsFast: decodeEventsBody (the fast path, falling back to
// encoding/json) answers every body exactly as decodeEventsJSON does, events
// or error; and whatever the fast path takes, encoding/json takes too.
func FuzzDecodeEventsFast(f *testing.F) {
	for _, s := range decodeSeeds {
		f.Add([]byte(s))
	}
	f.Add(batchBody(20, false))
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxBatchBody {
			return // readJSONBody refuses it before decoding
		}
		sameDecoding(t, body)
		if fast, ok := decodeEventsFast(body); ok {
			slow, err := decodeEventsJSON(body)
			if err != nil || !reflect.DeepEqual(fast, slow) {
				t.Fatalf("fast path took %q as %#v; encoding/json: %#v, %v", body, fast, slow, err)
			}
		}
	})
}

// batchBody is a batch of n fresh views as a load generator sends it: all on
// one video (hot) or spread over 10,000.
func batchBody(n int, hot bool) []byte {
	var b strings.Builder
	b.WriteByte('[')
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		video := "v" + strconv.Itoa(i%10000)
		if hot {
			video = "hot"
		}
		b.WriteString(`{"videoId":"` + video + `","userId":"u` + strconv.Itoa(i) + `","timestamp":1763787600000}`)
	}
	b.WriteByte(']')
	return []byte(b.String())
}

// BenchmarkDecodeEvents compares the two decoders on batches of 1,000 events
// (per event: ns and allocations).
func BenchmarkDecodeEvents(b *testing.B) {
	for _, mix := range []struct {
		name string
		hot  bool
	}{{"spread", false}, {"hot", true}} {
		body := batchBody(1000, mix.hot)
		b.Run(mix.name+"/fast", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, ok := decodeEventsFast(body); !ok {
					b.Fatal("fast path declined")
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/event")
		})
		b.Run(mix.name+"/encoding-json", func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				if _, err := decodeEventsJSON(body); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*1000), "ns/event")
		})
	}
}
