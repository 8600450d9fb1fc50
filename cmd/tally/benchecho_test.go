package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/tallyhq/tally/store"
)

// TestDurableEchoCeiling: the durable ceiling answers a view only once a
// raw event of it is on disk (it is there after the store is closed and
// opened again), and refuses a body it cannot read.
func TestDurableEchoCeiling(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(store.DefaultOptions(dir))
	if err != nil {
		t.Fatal(err)
	}
	com := store.NewCommitter(st, store.CommitterConfig{})
	h := newEchoCeilingOn(com)
	post := func(video, body string) int {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/videos/"+video+"/views", strings.NewReader(body)))
		return rec.Code
	}
	for _, user := range []string{"u1", "u2"} {
		if code := post("v1", `{"userId":"`+user+`"}`); code != http.StatusOK {
			t.Fatalf("view of %s: status %d", user, code)
		}
	}
	if code := post("v1", `{"userId":`); code != http.StatusBadRequest {
		t.Errorf("bad body: status %d, want 400", code)
	}
	if err := com.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	if st, err = store.Open(store.DefaultOptions(dir)); err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	var got []string
	if err := st.ForEachEvent(0, 1<<62, func(ev store.Event) error {
		got = append(got, ev.Video+"/"+ev.User)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "v1/u1,v1/u2" {
		t.Errorf("logged events %q, want v1/u1 and v1/u2", got)
	}
}
