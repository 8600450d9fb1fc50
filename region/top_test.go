package region

import (
	"context"
	"fmt"
	"testing"
)

func TestTopVideos(t *testing.T) {
	cfg := TestConfig()
	cfg.UserRate, cfg.UserBurst = 1e6, 1e6
	n, err := Open(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	// Video vN gets N views; b3 ties with v3 and sorts before it.
	views := map[string]int{"v1": 1, "v2": 2, "v3": 3, "b3": 3, "v5": 5}
	for video, count := range views {
		for u := range count {
			if _, err := n.RecordView(context.Background(), View{Video: video, User: fmt.Sprintf("u%d", u)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := n.Views("never-viewed"); err != nil { // a miss must not show up
		t.Fatal(err)
	}
	got := n.TopVideos(4)
	want := []struct {
		video string
		count uint64
	}{{"v5", 5}, {"b3", 3}, {"v3", 3}, {"v2", 2}}
	if len(got) != len(want) {
		t.Fatalf("TopVideos(4) = %+v, want %v", got, want)
	}
	for i, w := range want {
		if got[i].Video != w.video || got[i].Count != w.count || got[i].LastUpdated.IsZero() {
			t.Errorf("TopVideos(4)[%d] = %+v, want %s with %d views and a time", i, got[i], w.video, w.count)
		}
	}
	if all := n.TopVideos(100); len(all) != len(views) {
		t.Errorf("TopVideos(100) has %d videos, want %d", len(all), len(views))
	}
	if none := n.TopVideos(0); len(none) != 0 {
		t.Errorf("TopVideos(0) = %v", none)
	}
}
