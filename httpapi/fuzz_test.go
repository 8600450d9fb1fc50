package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/tallyhq/tally/region"
)

// checkDecodeError requires err to be an answer the API can give: an input
// error with a stable code and a 4xx status, never a 500.
func checkDecodeError(t *testing.T, err error, codes ...string) {
	t.Helper()
	var ae *apiError
	var ie *region.InputError
	if !errors.As(err, &ae) && !errors.As(err, &ie) {
		t.Fatalf("error %T %v is neither an API nor an input error", err, err)
	}
	got := classify(err)
	if got.Status < 400 || got.Status >= 500 {
		t.Fatalf("error %v answers %d", err, got.Status)
	}
	for _, c := range codes {
		if got.Code == c {
			return
		}
	}
	t.Fatalf("error %v has code %q, want one of %q", err, got.Code, codes)
}

// FuzzDecodeViewBody feeds arbitrary bytes to the decoder of POST
// /videos/{id}/views bodies: it must answer with a stable 4xx code or a
// user and timestamp that survive a round trip.
func FuzzDecodeViewBody(f *testing.F) {
	for _, s := range []string{
		`{"userId":"u1"}`,
		`{"userId":"user-42","timestamp":1763787600000}`,
		`{"userId":"u","timestamp":"2026-11-22T05:00:00Z"}`,
		`{"userId":"u","timestamp":"2026-11-22T05:00:00.123456789+02:00"}`,
		`{"userId":"u","timestamp":null}`,
		`{"userId":null}`,
		`{"userId":"u","timestamp":-5}`,
		`{"userId":"u","timestamp":1e3}`,
		`{"userId":"u","timestamp":99999999999999999999999}`,
		`{"userId":"u","timestamp":{"a":[1,2,3]}}`,
		`{"userId":"u"} {"userId":"v"}`,
		`{"userId":"\u0000\ud800"}`,
		`{"userId":5}`,
		`[]`, `null`, ``, `{`, `"u"`,
		`{"userId":"u","extra":[[[[[[[[[[]]]]]]]]]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxViewBody {
			return // readJSONBody refuses it before decoding
		}
		user, ts, err := decodeViewBody(body)
		if err != nil {
			checkDecodeError(t, err, CodeMalformedJSON, region.CodeInvalidUserID, region.CodeInvalidTimestamp)
			return
		}
		if ts < 0 {
			t.Fatalf("negative timestamp %d accepted", ts)
		}
		req := map[string]any{"userId": user}
		if ts != 0 {
			req["timestamp"] = ts
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		u2, ts2, err := decodeViewBody(again)
		if err != nil || ts2 != ts || (u2 != user && strings.ToValidUTF8(user, "\uFFFD") == user) {
			t.Fatalf("round trip of %q: %q %d %v, want %q %d", again, u2, ts2, err, user, ts)
		}
	})
}

// FuzzDecodeEventsBody feeds arbitrary bytes to the decoder of POST
// /v1/events bodies: it must answer with a stable 4xx code or at most
// MaxBatchEvents events whose timestamps parse or are refused with a code.
func FuzzDecodeEventsBody(f *testing.F) {
	for _, s := range []string{
		`[{"videoId":"v1","userId":"u1","timestamp":1763787600000},{"videoId":"v1","userId":"u1"},{"videoId":"v 2","userId":"u2"}]`,
		`[]`, ` [ ] `, `[{}]`, `[null]`, `[{},{},{}]`,
		`[{"videoId":"v","userId":"u","timestamp":"2026-11-22T05:00:00Z"}]`,
		`[{"videoId":"v","userId":"u","timestamp":"yesterday"}]`,
		`[{"videoId":5}]`, `[1,2]`, `[[]]`, `[{}],`, `[{}] x`, `[{}][]`, `{"videoId":"v"}`,
		`[{"videoId":"v","userId":"u","timestamp":1.5}]`,
		`["` + strings.Repeat("a", 200) + `"]`,
		`[` + strings.Repeat(`{},`, 20) + `{}]`,
		`[{"videoId":"v","userId":"u","event":"like"},{"videoId":"v","userId":"u","event":"unlike"},{"videoId":"v","userId":"u","event":"share","timestamp":1763787600000}]`,
		`[{"videoId":"v","userId":"u","event":5}]`, `[{"event":null}]`, `[{"event":"\u0000"}]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxBatchBody {
			return // readJSONBody refuses it before decoding
		}
		events, err := decodeEventsBody(body)
		if err != nil {
			checkDecodeError(t, err, CodeMalformedJSON, CodeTooManyEvents)
			if classify(err).Code == CodeTooManyEvents && classify(err).Status != http.StatusRequestEntityTooLarge {
				t.Fatalf("too_many_events with status %d", classify(err).Status)
			}
			return
		}
		if len(events) > MaxBatchEvents {
			t.Fatalf("%d events accepted", len(events))
		}
		for _, ev := range events {
			ts, err := parseTimestamp(ev.Timestamp)
			if err != nil {
				checkDecodeError(t, err, region.CodeInvalidTimestamp)
				continue
			}
			if ts < 0 {
				t.Fatalf("negative timestamp %d accepted", ts)
			}
		}
		// Whatever decoded re-encodes to a batch that decodes the same.
		again, err := json.Marshal(events)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := decodeEventsBody(again)
		if err != nil || len(back) != len(events) {
			t.Fatalf("round trip of %q: %d events, %v; want %d", again, len(back), err, len(events))
		}
		for i, ev := range events {
			if back[i].Event != ev.Event && strings.ToValidUTF8(ev.Event, "\uFFFD") == ev.Event {
				t.Fatalf("round trip of %q: event %d type %q, want %q", again, i, back[i].Event, ev.Event)
			}
			if _, err := ev.view(0, ""); err != nil {
				checkDecodeError(t, err, region.CodeUnknownEvent)
			}
		}
	})
}

// FuzzDecodeLikeBody feeds arbitrary bytes to the decoder of POST /v1/likes
// bodies: it must answer with a stable 4xx code or a video, user and
// timestamp that survive a round trip.
func FuzzDecodeLikeBody(f *testing.F) {
	for _, s := range []string{
		`{"videoId":"v1","userId":"u1"}`,
		`{"videoId":"v1","userId":"u1","timestamp":1763787600000}`,
		`{"videoId":"v1","userId":"u1","timestamp":"2026-11-22T05:00:00Z"}`,
		`{"userId":"u1"}`, `{"videoId":"v1"}`, `{"videoId":null,"userId":"u"}`,
		`{"videoId":5,"userId":"u"}`, `{"videoId":"v","userId":"u","timestamp":-1}`,
		`{"videoId":"v","userId":"u"} {}`, `[]`, `null`, ``, `{`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxViewBody {
			return // readJSONBody refuses it before decoding
		}
		video, user, ts, err := decodeLikeBody(body)
		if err != nil {
			checkDecodeError(t, err, CodeMalformedJSON, region.CodeInvalidVideoID, region.CodeInvalidUserID, region.CodeInvalidTimestamp)
			return
		}
		if ts < 0 {
			t.Fatalf("negative timestamp %d accepted", ts)
		}
		req := map[string]any{"videoId": video, "userId": user}
		if ts != 0 {
			req["timestamp"] = ts
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		v2, u2, ts2, err := decodeLikeBody(again)
		valid := strings.ToValidUTF8(video+user, "\uFFFD") == video+user
		if err != nil || ts2 != ts || (valid && (v2 != video || u2 != user)) {
			t.Fatalf("round trip of %q: %q %q %d %v, want %q %q %d", again, v2, u2, ts2, err, video, user, ts)
		}
	})
}

// FuzzParseQueryTime feeds arbitrary strings to the parser of the from and
// to query parameters: it must answer invalid_time or a time between 1970
// and 9999, and an accepted time written as unix ms parses back the same.
func FuzzParseQueryTime(f *testing.F) {
	for _, s := range []string{
		"1763787600000", "0", "-1", "+5", "1.5", "2026-11-22T05:00:00Z",
		"2026-11-22T05:00:00.123456789+02:00", "2026-11-22T05:00:00 02:00",
		"0000-01-01T00:00:00Z", "9999-12-31T23:59:59.999999999-23:59",
		"253402300799999", "253402300800000", "99999999999999999999", "", "yesterday",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseQueryTime("from", s)
		if err != nil {
			checkDecodeError(t, err, CodeInvalidTime)
			if len(classify(err).Message) > 400 {
				t.Fatalf("message of %d bytes for %d bytes of input", len(classify(err).Message), len(s))
			}
			return
		}
		ms := got.UnixMilli()
		if ms < 0 || ms > maxQueryMs {
			t.Fatalf("%q accepted as %v, out of range", s, got)
		}
		back, err := parseQueryTime("from", strconv.FormatInt(ms, 10))
		if err != nil || !back.Equal(got) {
			t.Fatalf("%q: %v; as unix ms back %v, %v", s, got, back, err)
		}
	})
}
