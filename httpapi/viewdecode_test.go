package httpapi

import (
	"bytes"
	"strings"
	"testing"
)

// sameViewDecoding fails t unless decodeViewBody (fast path first) and
// decodeViewJSON give body exactly the same answer: the same user and
// timestamp, or errors with the same status, code and text.
func sameViewDecoding(t *testing.T, body []byte) {
	t.Helper()
	user, ts, err := decodeViewBody(body)
	wantUser, wantTs, wantErr := decodeViewJSON(body)
	switch {
	case err == nil && wantErr == nil:
		if user != wantUser || ts != wantTs {
			t.Fatalf("%q: fast path %q %d, encoding/json %q %d", body, user, ts, wantUser, wantTs)
		}
	case err == nil || wantErr == nil:
		t.Fatalf("%q: decodeViewBody error %v, encoding/json error %v", body, err, wantErr)
	default:
		if *classify(err) != *classify(wantErr) || err.Error() != wantErr.Error() {
			t.Fatalf("%q: decodeViewBody error %#v, encoding/json error %#v", body, err, wantErr)
		}
	}
}

// viewDecodeSeeds are bodies for the table test and the fuzz corpus: the
// shapes clients send, and near misses of every rule of the fast path.
var viewDecodeSeeds = []string{
	`{"userId":"u1"}`, ` { "userId" : "u1" } `, "\t{\r\n\"userId\":\"u1\"\n}\n",
	`{"userId":"user-42","timestamp":1763787600000}`, `{"timestamp":1763787600000,"userId":"u"}`,
	`{"userId":"u","timestamp":"2026-11-22T05:00:00Z"}`, `{"userId":"u","timestamp":"yesterday"}`,
	`{"userId":"u","timestamp":null}`, `{"userId":"u","timestamp":null }`, `{"userId":"u","timestamp":-5}`,
	`{"userId":"u","timestamp":0}`, `{"userId":"u","timestamp":-0}`,
	`{"userId":"a","userId":"b"}`, `{"userId":"a","userId":null}`, `{"userId":null,"userId":"b"}`, // the last one wins
	`{"userId":"u","timestamp":1,"timestamp":null}`, `{"userId":"u","timestamp":"x","timestamp":2}`,
	`{}`, `{"timestamp":5}`, `{"userId":null}`, `{"userId":""}`, `{"userId":5}`, `{"userId":true}`,
	`{"userID":"u"}`, `{"USERID":"u"}`, `{"UserId":"u"}`, `{"Timestamp":5,"userId":"u"}`, // keys match without case
	`{"userId":"u","extra":1}`, `{"userId":"u","extra":[[[[[[[[[[]]]]]]]]]]}`,
	`{"userId":"u\u0031"}`, `{"userId":"u\"v"}`, `{"userId":"\u0000\ud800"}`,
	`{"userId":"u","timestamp":1.5}`, `{"userId":"u","timestamp":1e3}`, `{"userId":"u","timestamp":01}`,
	`{"userId":"u","timestamp":-}`, `{"userId":"u","timestamp":--1}`, `{"userId":"u","timestamp":1-2}`,
	`{"userId":"u","timestamp":true}`, `{"userId":"u","timestamp":nullx}`, `{"userId":"u","timestamp":nul}`,
	`{"userId":"u","timestamp":{}}`, `{"userId":"u","timestamp":[1]}`, `{"userId":"u","timestamp":"\u0032"}`,
	`{"userId":"u","timestamp":99999999999999999999999}`,
	`{"userId":"u"`, `{"userId":"u"} x`, `{"userId":"u"} {"userId":"v"}`, `{"userId":"u",}`, `{"userId" "u"}`,
	`{"userId":"u" "timestamp":1}`, `{,}`, `{`, `}`, ``, ` `, `[]`, `null`, `"u"`, `[{"userId":"u"}]`,
	"{\"userId\":\"caf\xc3\xa9\"}", "{\"userId\":\"\xff\"}", "{\"userId\":\"a\x7fb\"}", "{\"userId\":\"a\tb\"}",
	"\xef\xbb\xbf{\"userId\":\"u\"}", "{\f\"userId\":\"u\"}", "{\"userId\":\"u\"}\x00",
	`{"userId":"` + strings.Repeat("u", 200) + `"}`,
}

func TestDecodeViewFast(t *testing.T) {
	taken := 0
	for _, body := range viewDecodeSeeds {
		if _, _, ok := decodeViewFast([]byte(body)); ok {
			taken++
		}
		sameViewDecoding(t, []byte(body))
	}
	// The bodies clients send take the fast path; the near misses do not.
	for _, body := range viewDecodeSeeds[:6] {
		if _, _, ok := decodeViewFast([]byte(body)); !ok {
			t.Errorf("fast path declined %q", body)
		}
	}
	for _, body := range []string{`{"userID":"u"}`, `{"userId":"u\u0031"}`, `{"userId":"u","timestamp":1.5}`, `{"userId":"u","extra":1}`, `{}`} {
		if _, _, ok := decodeViewFast([]byte(body)); ok {
			t.Errorf("fast path took %q", body)
		}
	}
	t.Logf("fast path took %d of %d bodies", taken, len(viewDecodeSeeds))
}

// The user the fast path returns does not pin the body (the node keeps it).
func TestDecodeViewFastCopiesUser(t *testing.T) {
	body := []byte(`{"userId":"u1","timestamp":5}`)
	user, _, ok := decodeViewFast(body)
	if !ok {
		t.Fatal("fast path declined")
	}
	copy(body, bytes.Repeat([]byte("X"), len(body)))
	if user != "u1" {
		t.Fatalf("user changed with the body: %q", user)
	}
}

// FuzzDecodeViewFast: decodeViewBody (the fast path, falling back to
// encoding/json) answers every body exactly as decodeViewJSON does, user and
// timestamp or error; and whatever the fast path takes, encoding/json takes
// as the same user and raw timestamp.
func FuzzDecodeViewFast(f *testing.F) {
	for _, s := range viewDecodeSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if len(body) > MaxViewBody {
			return // readJSONBody refuses it before decoding
		}
		sameViewDecoding(t, body)
		if user, raw, ok := decodeViewFast(body); ok {
			var req viewRequest
			if err := decodeStrict(body, &req); err != nil || req.UserID == nil || *req.UserID != user || !bytes.Equal(raw, req.Timestamp) {
				t.Fatalf("fast path took %q as %q %q; encoding/json: %+v, %v", body, user, raw, req, err)
			}
		}
	})
}
