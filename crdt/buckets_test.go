package crdt

import "testing"

// TestBucketKeyNames: Key and AppendEvent spell a bucket's name the same
// way, ParseBucketKey reads it back, and AppendEvent appends to what dst
// holds without allocating when dst has room.
func TestBucketKeyNames(t *testing.T) {
	for _, tc := range []struct {
		b    BucketKey
		want string
	}{
		{BucketKey{Video: "v1", Event: "view", Res: Minute, Index: 28_512_345}, "#view/m/28512345"},
		{BucketKey{Video: "v1", Event: "like", Res: Hour, Index: 475_205}, "#like/h/475205"},
		{BucketKey{Video: "v1", Event: "share", Res: Day, Index: 0}, "#share/d/0"},
		{BucketKey{Video: "v1", Event: "view", Res: Minute, Index: -3}, "#view/m/-3"},
	} {
		k := tc.b.Key()
		if k.Video != tc.b.Video || k.Event != tc.want {
			t.Errorf("%v.Key() = %v, want event %q", tc.b, k, tc.want)
		}
		if got := string(tc.b.AppendEvent([]byte("x"))); got != "x"+tc.want {
			t.Errorf("%v.AppendEvent(x) = %q, want %q", tc.b, got, "x"+tc.want)
		}
		if back, ok := ParseBucketKey(k); !ok || back != tc.b {
			t.Errorf("ParseBucketKey(%v) = %v, %v; want %v", k, back, ok, tc.b)
		}
	}
	b := BucketKey{Video: "v", Event: "view", Res: Minute, Index: 28_512_345}
	buf := make([]byte, 0, 64)
	if allocs := testing.AllocsPerRun(100, func() { buf = b.AppendEvent(buf[:0]) }); allocs != 0 {
		t.Errorf("AppendEvent into a buffer with room: %v allocations, want 0", allocs)
	}
	// One name per bucket: an index spelled any other way is no bucket.
	for _, event := range []string{"#view/m/007", "#view/m/+7", "#view/m/-0", "#view/m/", "#view/m/7x", "#view/x/7", "#/m/7"} {
		if got, ok := ParseBucketKey(Key{Video: "v", Event: event}); ok {
			t.Errorf("ParseBucketKey(%q) = %v, want not a bucket", event, got)
		}
	}
	// The commit path parses every bucket it writes: without allocating.
	k := b.Key()
	if allocs := testing.AllocsPerRun(100, func() { ParseBucketKey(k) }); allocs != 0 {
		t.Errorf("ParseBucketKey: %v allocations, want 0", allocs)
	}
}
