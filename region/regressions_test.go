package region

import (
	"errors"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

// The tests in this file pin bugs found and fixed, so they stay fixed.

// Regression: RecordViews used to increment the counter and win the claims in
// memory before Submit, and when Submit failed with ErrOverloaded the views
// stayed counted (written by the next batch's Prepare) without their claims.
// Admission is now decided (Committer.Admit) before anything changes.
func TestOverloadedViewsAreNotCounted(t *testing.T) {
	n := openNode(t, func() Config { c := testConfig(newFakeClock(t0)); c.MaxPending = 3; return c }())
	if _, err := n.RecordViews(testCtx(t), []View{{Video: "v", User: "a"}, {Video: "v", User: "b"}}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("RecordViews: %v, want ErrOverloaded", err)
	}
	record(t, n, View{Video: "w", User: "a"}) // any later batch
	if c := views(t, n, "v"); c.Value != 0 {
		t.Errorf("Views after a shed batch = %d, want 0", c.Value)
	}
	if res := record(t, n, View{Video: "v", User: "a"}); !res.Counted {
		t.Errorf("retry of a shed view: %+v, want counted", res)
	}
}

// Regression: the counter state is written coalesced by whichever batch runs
// Prepare first, and that used to be able to be a batch before the one holding
// the view's claim: between its increment and its Submit a view's count could
// become durable without its claim, and after a crash the client's retry was
// counted again. Now no batch can be cut while a view is between its
// increment and its Submit (Committer.Admit), so a crash at that moment finds
// neither the count nor the claim on disk.
func TestCountNeverDurableBeforeClaim(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock(t0)
	h := newHoldCounted()
	rec := &recorder{onIngested: h.hook}
	cfg := diskConfig(clock, dir, DurabilitySync)
	cfg.Observer = rec
	n := openNode(t, cfg)
	ctx := testCtx(t)

	held := make(chan error, 1)
	go func() { _, err := n.RecordView(ctx, View{Video: "v", User: "held"}); held <- err }()
	wait(t, h.held, "the first view to reach the hold")
	// Another view of the same video tries to commit a batch meanwhile; it
	// cannot be acknowledged while the held view keeps the batch open.
	other := make(chan error, 1)
	go func() { _, err := n.RecordView(ctx, View{Video: "v", User: "other"}); other <- err }()
	for range 1000 {
		runtime.Gosched()
	}
	if c := views(t, n, "v"); c.Value != 0 {
		t.Errorf("Views = %d while the held view's claim was not durable, want 0", c.Value)
	}

	// Crash now: take a copy of the synced data directory.
	crashed := filepath.Join(t.TempDir(), "crashed")
	copyDir(t, dir, crashed)
	close(h.release)
	if err := wait(t, held, "the held view"); err != nil {
		t.Fatal(err)
	}
	if err := wait(t, other, "the other view"); err != nil {
		t.Fatal(err)
	}
	if c := views(t, n, "v"); c.Value != 2 {
		t.Errorf("Views after both views were acknowledged = %d, want 2", c.Value)
	}

	n2 := openNode(t, diskConfig(clock, crashed, DurabilitySync))
	if c := views(t, n2, "v"); c.Value != 0 {
		t.Errorf("after the crash: count %d without any durable claim, want 0", c.Value)
	}
	res := record(t, n2, View{Video: "v", User: "held"}) // the client's retry
	if !res.Counted || res.Count != 1 {
		t.Errorf("after a crash and the unacknowledged view's retry: %+v, want counted with count 1", res)
	}
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	if err := os.MkdirAll(to, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(from)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "LOCK" {
			continue
		}
		src, err := os.Open(filepath.Join(from, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		dst, err := os.Create(filepath.Join(to, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(dst, src)
		src.Close()
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}
