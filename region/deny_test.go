package region

import (
	"strings"
	"testing"

	"github.com/tallyhq/tally/store"
)

func TestDenyList(t *testing.T) {
	d, err := ParseDenyList(strings.NewReader("# click farm\nuser:bot-1\n\nip:203.0.113.0/24\nip:2001:db8::1\n"))
	if err != nil {
		t.Fatal(err)
	}
	if d.Len() != 3 {
		t.Fatalf("Len = %d", d.Len())
	}
	clock := newFakeClock(t0)
	cfg := testConfig(clock)
	cfg.Deny = d
	rec := &recorder{}
	cfg.Observer = rec
	n := openNode(t, cfg)
	for _, tc := range []struct {
		v    View
		want store.Fate
	}{
		{View{Video: "v", User: "bot-1"}, store.FateDenied},
		{View{Video: "v", User: "u1", IP: "203.0.113.77"}, store.FateDenied},
		{View{Video: "v", User: "u2", IP: "::ffff:203.0.113.8"}, store.FateDenied},
		{View{Video: "v", User: "u3", IP: "2001:db8::1"}, store.FateDenied},
		{View{Video: "v", User: "u4", IP: "203.0.114.1"}, store.FateCounted},
		{View{Video: "v", User: "u5"}, store.FateCounted},
	} {
		if res := record(t, n, tc.v); res.Fate != tc.want {
			t.Errorf("%+v: fate %v, want %v", tc.v, res.Fate, tc.want)
		}
	}
	if got := views(t, n, "v").Value; got != 2 {
		t.Errorf("count %d, want 2 (denied views are never counted)", got)
	}
	if rec.fate(store.FateDenied) != 4 {
		t.Errorf("observer saw %d denied, want 4", rec.fate(store.FateDenied))
	}
	evs := 0
	if err := n.AuditEvents(0, 1<<62, "v", func(ev store.Event) error {
		if ev.Fate == store.FateDenied {
			evs++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if evs != 4 {
		t.Errorf("%d denied events logged, want 4", evs)
	}
	for _, bad := range []string{"user:bad id", "ip:300.1.1.1", "ip:10.0.0.0/33", "host:x"} {
		if _, err := ParseDenyList(strings.NewReader(bad)); err == nil {
			t.Errorf("ParseDenyList(%q) accepted", bad)
		}
	}
}
