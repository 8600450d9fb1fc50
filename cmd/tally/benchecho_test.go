package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
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

// TestDurableEchoFloor: the durable floor answers a view only once its line
// (video, time, the body as sent) is in the file, written and fdatasynced
// before the answer, and wraps around at the end of its zeroed file instead
// of growing it.
func TestDurableEchoFloor(t *testing.T) {
	path := filepath.Join(t.TempDir(), "wal")
	const size = 80 // bytes: lines of 33 (13 digits of Unix ms), the third wraps around
	w, err := openWALFloor(path, size)
	if err != nil {
		t.Fatal(err)
	}
	h := newEchoCeilingWith(w.log)
	post := func(video, user string) {
		t.Helper()
		rec := httptest.NewRecorder()
		body := `{"userId":"` + user + `"}`
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/videos/"+video+"/views", strings.NewReader(body)))
		if rec.Code != http.StatusOK {
			t.Fatalf("view of %s: status %d", user, rec.Code)
		}
	}
	read := func() string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if len(b) != size {
			t.Fatalf("file is %d bytes, want its zeroed %d", len(b), size)
		}
		return string(b)
	}
	line := func(video, user string) *regexp.Regexp {
		return regexp.MustCompile(`^` + video + `\t[0-9]{13}\t\{"userId":"` + user + `"\}\n$`)
	}
	post("v1", "u1")
	if got := read(); !line("v1", "u1").MatchString(got[:33]) {
		t.Fatalf("answered before the view was in the file: %q", got)
	}
	post("v1", "u2")
	if got := read(); !line("v1", "u2").MatchString(got[33:66]) {
		t.Fatalf("answered before the second view was in the file: %q", got)
	}
	post("v2", "u3")
	if got := read(); !line("v2", "u3").MatchString(got[66:]+got[:19]) || !line("v1", "u2").MatchString(got[33:66]) {
		t.Errorf("third line not wrapped around the end of the file: %q", got)
	}
	if err := w.close(); err != nil {
		t.Fatal(err)
	}
}
