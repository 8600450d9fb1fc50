package httpapi

import (
	"bytes"
	"encoding/json"
	"testing"
)

// TestCountResponseJSON: the hand-written GET /v1/views answer is byte for
// byte what encoding/json writes (as echo's c.JSON does, with the trailing
// newline), and anything it does not write itself is left to c.JSON.
func TestCountResponseJSON(t *testing.T) {
	ts := "2026-11-22T12:00:00.123Z"
	odd := "a\"b"
	for _, r := range []countResponse{
		{VideoID: "v1", ViewCount: 0},
		{VideoID: "dQw4w9WgXcQ", ViewCount: 1_234_567, LastUpdated: &ts},
		{VideoID: "a.b:c_d-e~f", ViewCount: 1<<64 - 1, LastUpdated: &ts},
		{VideoID: "x", ViewCount: 3, LastUpdated: &odd},
		{VideoID: "<script>", ViewCount: 1},
		{VideoID: "é", ViewCount: 1},
		{VideoID: "tab\there", ViewCount: 1},
		{VideoID: "back\\slash", ViewCount: 1},
		{VideoID: "v", ViewCount: 2, Regions: map[string]uint64{"us": 2}},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		got, ok := r.appendJSON(nil)
		if !ok {
			if plainJSONString(r.VideoID) && len(r.Regions) == 0 && (r.LastUpdated == nil || plainJSONString(*r.LastUpdated)) {
				t.Errorf("%+v: left to c.JSON, but it is plain", r)
			}
			continue
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%+v:\n got %s\nwant %s", r, got, want.Bytes())
		}
	}
}

// FuzzCountResponseJSON checks the same on arbitrary IDs and counts.
func FuzzCountResponseJSON(f *testing.F) {
	f.Add("v1", uint64(7), "2026-11-22T12:00:00Z", true)
	f.Add("<&>", uint64(0), "", false)
	f.Fuzz(func(t *testing.T, video string, n uint64, ts string, hasTS bool) {
		r := countResponse{VideoID: video, ViewCount: n}
		if hasTS {
			r.LastUpdated = &ts
		}
		if got, ok := r.appendJSON(nil); ok {
			matchesEncoder(t, r, got)
		}
	})
}

// TestViewResponseJSON: the hand-written POST /videos/{id}/views answer is
// byte for byte what encoding/json writes, and what it does not write itself
// is left to c.JSON.
func TestViewResponseJSON(t *testing.T) {
	for _, r := range []viewResponse{
		{VideoID: "v1", Counted: true, ViewCount: 1},
		{VideoID: "dQw4w9WgXcQ", Counted: false, ViewCount: 1<<64 - 1, Reason: "duplicate"},
		{VideoID: "a.b:c_d-e~f", Reason: "rate_limited"},
		{VideoID: "<script>", Counted: true},
		{VideoID: "é", Counted: true},
		{VideoID: "v", Reason: "a\"b"},
	} {
		var want bytes.Buffer
		if err := json.NewEncoder(&want).Encode(r); err != nil {
			t.Fatal(err)
		}
		got, ok := r.appendJSON(nil)
		if !ok {
			if plainJSONString(r.VideoID) && plainJSONString(r.Reason) {
				t.Errorf("%+v: left to c.JSON, but it is plain", r)
			}
			continue
		}
		if !bytes.Equal(got, want.Bytes()) {
			t.Errorf("%+v:\n got %s\nwant %s", r, got, want.Bytes())
		}
	}
}

// FuzzViewResponseJSON checks the same on arbitrary IDs, counts and reasons.
func FuzzViewResponseJSON(f *testing.F) {
	f.Add("v1", true, uint64(7), "")
	f.Add("<&>", false, uint64(0), "duplicate")
	f.Fuzz(func(t *testing.T, video string, counted bool, n uint64, reason string) {
		r := viewResponse{VideoID: video, Counted: counted, ViewCount: n, Reason: reason}
		if got, ok := r.appendJSON(nil); ok {
			matchesEncoder(t, r, got)
		}
	})
}

// matchesEncoder fails t unless got is v as encoding/json's Encoder writes
// it (what c.JSON sends).
func matchesEncoder(t *testing.T, v any, got []byte) {
	t.Helper()
	var want bytes.Buffer
	if err := json.NewEncoder(&want).Encode(v); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("%+v:\n got %s\nwant %s", v, got, want.Bytes())
	}
}
