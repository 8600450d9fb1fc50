package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The crash test runs the real binary, kills it with SIGKILL while views are
// in flight, restarts it on the same data directory and checks that:
//
//   - every view acknowledged as counted (or as a duplicate, which the node
//     only answers once the earlier view is durable) is still counted;
//   - nothing is counted that was not sent, and nothing twice: a video's count
//     never exceeds the distinct (video, user) pairs that were acknowledged or
//     left without an answer;
//   - dedup claims survive: re-sending an acknowledged pair is a duplicate and
//     leaves the count unchanged; re-sending an unanswered pair settles it.
//
// It does so twice (recovery of a recovered directory), then stops the node
// with SIGTERM under load, where every count must equal exactly what was
// acknowledged.

const (
	crashVideos      = 20
	crashWorkers     = 16
	listenDeadline   = 60 * time.Second
	exitDeadline     = 60 * time.Second
	requestTimeout   = 30 * time.Second
	repeatPercentage = 10 // of requests re-send an already sent pair
	crashAdminToken  = "crash-test-admin-token"
)

func TestCrashRecovery(t *testing.T) {
	now := time.Now().UTC()
	if next := now.Truncate(24 * time.Hour).Add(24 * time.Hour); next.Sub(now) < 10*time.Minute {
		// Dedup windows are UTC days; a re-sent pair counts again in a new one.
		t.Skipf("less than 10 minutes to UTC midnight (%s); the test would straddle a dedup window", now.Format(time.TimeOnly))
	}
	bin := buildTally(t)
	dir := filepath.Join(t.TempDir(), "data")
	acks := 300
	if testing.Short() {
		acks = 100
	}
	m := newCrashModel()

	// Cycle 1: fresh directory, SIGKILL under load.
	p := startTally(t, bin, dir)
	st := m.load(t, p, "a", acks, p.kill)
	t.Logf("cycle 1: %s", st)

	// Cycle 2: recover, check, more load (new pairs and repeats), SIGKILL again.
	p = startTally(t, bin, dir)
	m.verify(t, p, "after first SIGKILL", false)
	st = m.load(t, p, "b", acks, p.kill)
	t.Logf("cycle 2: %s", st)

	// Cycle 3: recover a recovered directory, then SIGTERM under load.
	p = startTally(t, bin, dir)
	m.verify(t, p, "after second SIGKILL", false)
	st = m.load(t, p, "c", acks, p.terminate)
	t.Logf("cycle 3: %s", st)

	// A graceful stop drains in-flight requests and flushes: counts are exact.
	p = startTally(t, bin, dir)
	m.verify(t, p, "after SIGTERM", true)
	// The raw event log, recomputed, gives every live count: nothing the
	// crashes lost or doubled is hidden in the log either.
	requireCleanAudit(t, []string{p.url}, crashAdminToken, 1)
	p.terminate()
	if end := time.Now().UTC(); end.YearDay() != now.YearDay() {
		t.Logf("note: the test crossed UTC midnight (%s -> %s)", now, end)
	}
}

// buildTally builds the binary of this package into a temporary directory.
func buildTally(t *testing.T) string {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skipf("go tool not on PATH: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "tally")
	start := time.Now()
	cmd := exec.Command(goBin, "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	t.Logf("built %s in %v", bin, time.Since(start).Round(time.Millisecond))
	return bin
}

// ---------------------------------------------------------------------------
// The child process
// ---------------------------------------------------------------------------

type tallyProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	url    string
	client *http.Client
	output *lockedBuffer // stdout and stderr

	done    chan struct{} // closed once the process has been waited for
	waitErr error         // valid after done
}

// startTally starts tally serve on dataDir, with extra flags after the
// test's own (later flags win).
func startTally(t *testing.T, bin, dataDir string, extra ...string) *tallyProc {
	t.Helper()
	p := &tallyProc{t: t, output: &lockedBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, append([]string{"serve", "--data", dataDir, "--http", "127.0.0.1:0",
		"--user-rate", "1000000", "--user-burst", "1000000", "--admin-token", crashAdminToken}, extra...)...)
	p.cmd.Stderr = p.output
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start tally: %v", err)
	}
	t.Cleanup(p.cleanup)

	listening := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.output, line)
			if addr, ok := strings.CutPrefix(line, "tally: listening on "); ok {
				select {
				case listening <- strings.TrimSpace(addr):
				default:
				}
			}
		}
		io.Copy(io.Discard, stdout) //nolint:errcheck // drain after a scan error
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()

	timer := time.NewTimer(listenDeadline)
	defer timer.Stop()
	select {
	case u := <-listening:
		p.url = u
	case <-p.done:
		t.Fatalf("tally (pid %d) exited before listening: %v\noutput:\n%s", p.cmd.Process.Pid, p.waitErr, p.output)
	case <-timer.C:
		t.Fatalf("tally (pid %d) did not print its listening line within %v\noutput:\n%s", p.cmd.Process.Pid, listenDeadline, p.output)
	}
	if !strings.HasPrefix(p.url, "http://127.0.0.1:") {
		t.Fatalf("listening line gave %q", p.url)
	}
	p.client = &http.Client{
		Timeout:   requestTimeout,
		Transport: &http.Transport{MaxIdleConnsPerHost: crashWorkers, MaxConnsPerHost: 2 * crashWorkers},
	}
	return p
}

// cleanup kills the process if it still runs (t.Cleanup).
func (p *tallyProc) cleanup() {
	if p.client != nil {
		p.client.CloseIdleConnections()
	}
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Kill() //nolint:errcheck // it may have just exited
	select {
	case <-p.done:
	case <-time.After(exitDeadline):
		p.t.Errorf("tally (pid %d) did not exit after SIGKILL", p.cmd.Process.Pid)
	}
	if p.t.Failed() {
		p.t.Logf("output of tally pid %d:\n%s", p.cmd.Process.Pid, p.output)
	}
}

func (p *tallyProc) wait(what string) {
	p.t.Helper()
	select {
	case <-p.done:
	case <-time.After(exitDeadline):
		p.t.Fatalf("tally (pid %d) still running %v after %s\noutput:\n%s", p.cmd.Process.Pid, exitDeadline, what, p.output)
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *tallyProc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("kill tally: %v", err)
	}
	p.wait("SIGKILL")
	ws, _ := p.cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.Signaled() || ws.Signal() != syscall.SIGKILL {
		p.t.Fatalf("tally ended with %v, want death by SIGKILL\noutput:\n%s", p.cmd.ProcessState, p.output)
	}
}

// terminate sends SIGTERM and requires a clean exit with status 0.
func (p *tallyProc) terminate() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM tally: %v", err)
	}
	p.wait("SIGTERM")
	if p.waitErr != nil || p.cmd.ProcessState.ExitCode() != 0 {
		p.t.Fatalf("tally after SIGTERM: %v (exit code %d), want exit 0\noutput:\n%s", p.waitErr, p.cmd.ProcessState.ExitCode(), p.output)
	}
	if !strings.Contains(p.output.String(), "stopped cleanly") {
		p.t.Errorf("no clean-stop log line after SIGTERM\noutput:\n%s", p.output)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

type pair struct{ video, user string }

type viewAnswer struct {
	VideoID   string `json:"videoId"`
	Counted   bool   `json:"counted"`
	ViewCount uint64 `json:"viewCount"`
	Reason    string `json:"reason"`
}

// errNoAnswer marks a request that got no HTTP answer (connection error).
type errNoAnswer struct{ err error }

func (e errNoAnswer) Error() string { return "no answer: " + e.err.Error() }

// postView sends one view. A transport failure is an errNoAnswer; any other
// error means the node answered something unexpected.
func (p *tallyProc) postView(pr pair) (viewAnswer, error) {
	body := fmt.Sprintf(`{"userId":%q}`, pr.user)
	req, err := http.NewRequest(http.MethodPost, p.url+"/videos/"+pr.video+"/views", strings.NewReader(body))
	if err != nil {
		return viewAnswer{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := p.client.Do(req)
	if err != nil {
		return viewAnswer{}, errNoAnswer{err}
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return viewAnswer{}, errNoAnswer{err}
	}
	if resp.StatusCode != http.StatusOK {
		return viewAnswer{}, fmt.Errorf("POST %v: %d %s", pr, resp.StatusCode, b)
	}
	var v viewAnswer
	if err := json.Unmarshal(b, &v); err != nil {
		return viewAnswer{}, fmt.Errorf("POST %v: decode %s: %v", pr, b, err)
	}
	if v.VideoID != pr.video {
		return viewAnswer{}, fmt.Errorf("POST %v: answer for video %q", pr, v.VideoID)
	}
	return v, nil
}

func (p *tallyProc) count(video string) uint64 {
	p.t.Helper()
	resp, err := p.client.Get(p.url + "/videos/" + video + "/views")
	if err != nil {
		p.t.Fatalf("GET %s: %v", video, err)
	}
	defer resp.Body.Close()
	var c struct {
		ViewCount uint64 `json:"viewCount"`
	}
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		p.t.Fatalf("GET %s: %d %s", video, resp.StatusCode, b)
	}
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		p.t.Fatalf("GET %s: %v", video, err)
	}
	return c.ViewCount
}

func (p *tallyProc) counts() map[string]uint64 {
	p.t.Helper()
	out := make(map[string]uint64, crashVideos)
	for i := range crashVideos {
		v := videoName(i)
		out[v] = p.count(v)
	}
	return out
}

func videoName(i int) string { return fmt.Sprintf("crash-v%02d", i) }

// ---------------------------------------------------------------------------
// The model: what the client knows about every pair it sent
// ---------------------------------------------------------------------------

type pairState struct {
	sends    int  // requests started
	answered bool // a 200 answer came back: counted, or a duplicate of a durable view
	counted  int  // answers with counted:true (more than one is a bug)
	unknown  bool // a request got no answer: it may or may not have been counted
}

type crashModel struct {
	mu    sync.Mutex
	pairs map[pair]*pairState
	order []pair // in first-send order, for picking repeats
}

func newCrashModel() *crashModel { return &crashModel{pairs: make(map[pair]*pairState)} }

// begin records that a request for pr is about to be sent.
func (m *crashModel) begin(pr pair) {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.pairs[pr]
	if s == nil {
		s = &pairState{}
		m.pairs[pr] = s
		m.order = append(m.order, pr)
	}
	s.sends++
}

// record books the outcome of a request for pr and returns a non-nil error if
// it contradicts the model.
func (m *crashModel) record(pr pair, v viewAnswer, err error) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := m.pairs[pr]
	if _, ok := err.(errNoAnswer); ok {
		s.unknown = true
		return nil
	}
	if err != nil {
		s.unknown = true // an unexpected answer: be conservative about its fate
		return err
	}
	s.answered = true
	switch {
	case v.Counted:
		s.counted++
		if s.counted > 1 {
			return fmt.Errorf("pair %v was answered counted:true %d times", pr, s.counted)
		}
	case v.Reason == "duplicate":
		if s.sends < 2 {
			return fmt.Errorf("pair %v, sent once, was answered duplicate", pr)
		}
	default:
		return fmt.Errorf("pair %v not counted: reason %q", pr, v.Reason)
	}
	return nil
}

func (m *crashModel) randomSent(rng *rand.Rand) (pair, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.order) == 0 {
		return pair{}, false
	}
	return m.order[rng.IntN(len(m.order))], true
}

// bounds returns, per video, the pairs known counted (answered) and those that
// may be counted (answered or unknown).
func (m *crashModel) bounds() (lower, upper map[string]uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	lower, upper = make(map[string]uint64), make(map[string]uint64)
	for pr, s := range m.pairs {
		if s.answered {
			lower[pr.video]++
		}
		if s.answered || s.unknown {
			upper[pr.video]++
		}
	}
	return lower, upper
}

// sorted returns the pairs whose state satisfies keep.
func (m *crashModel) sorted(keep func(*pairState) bool) []pair {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []pair
	for _, pr := range m.order {
		if keep(m.pairs[pr]) {
			out = append(out, pr)
		}
	}
	return out
}

type loadStats struct {
	requests, acked, unanswered, inFlightAtStop int64
	elapsed                                     time.Duration
}

func (s loadStats) String() string {
	return fmt.Sprintf("%d requests, %d acknowledged counted, %d unanswered, %d in flight at the stop, %v",
		s.requests, s.acked, s.unanswered, s.inFlightAtStop, s.elapsed.Round(time.Millisecond))
}

// load sends views from crashWorkers goroutines (fresh pairs, and repeats of
// pairs sent before, possibly in earlier incarnations) until ackGoal views
// are acknowledged as counted, then calls stop (which ends the process) while
// the workers are still sending, and waits for the workers.
func (m *crashModel) load(t *testing.T, p *tallyProc, phase string, ackGoal int, stop func()) loadStats {
	t.Helper()
	start := time.Now()
	var (
		st       loadStats
		stopping atomic.Bool // set just before stop is called
		quit     atomic.Bool // workers stop taking new work
		inFlight atomic.Int64
		nextUser atomic.Int64
		goal     = make(chan struct{})
		goalOnce sync.Once
		wg       sync.WaitGroup
		reported atomic.Int64
	)
	maxFresh := int64(20 * ackGoal) // a bound, in case acks never come
	for w := range crashWorkers {
		rng := rand.New(rand.NewPCG(uint64(w), uint64(phase[0])))
		wg.Go(func() {
			for !quit.Load() {
				var pr pair
				repeat := rng.IntN(100) < repeatPercentage
				if repeat {
					var ok bool
					if pr, ok = m.randomSent(rng); !ok {
						repeat = false
					}
				}
				if !repeat {
					k := nextUser.Add(1)
					if k > maxFresh {
						return
					}
					pr = pair{video: videoName(int(k) % crashVideos), user: fmt.Sprintf("%s-u%d", phase, k)}
				}
				m.begin(pr)
				inFlight.Add(1)
				v, err := p.postView(pr)
				inFlight.Add(-1)
				atomic.AddInt64(&st.requests, 1)
				if bad := m.record(pr, v, err); bad != nil && reported.Add(1) <= 10 {
					t.Errorf("phase %s: %v", phase, bad)
				}
				if err != nil {
					if _, ok := err.(errNoAnswer); ok {
						atomic.AddInt64(&st.unanswered, 1)
						if !stopping.Load() && reported.Add(1) <= 10 {
							t.Errorf("phase %s: request failed before the node was stopped: %v", phase, err)
						}
					}
					return // the node is gone (or misbehaving): this worker is done
				}
				if v.Counted && atomic.AddInt64(&st.acked, 1) >= int64(ackGoal) {
					goalOnce.Do(func() { close(goal) })
				}
			}
		})
	}
	workersDone := make(chan struct{})
	go func() { wg.Wait(); close(workersDone) }()

	select {
	case <-goal:
	case <-workersDone:
		t.Fatalf("phase %s: workers stopped after %d acknowledged views, before the goal of %d", phase, atomic.LoadInt64(&st.acked), ackGoal)
	case <-time.After(5 * time.Minute):
		quit.Store(true)
		t.Fatalf("phase %s: only %d acknowledged views in 5 minutes", phase, atomic.LoadInt64(&st.acked))
	}
	stopping.Store(true)
	st.inFlightAtStop = inFlight.Load()
	stop()
	quit.Store(true)
	select {
	case <-workersDone:
	case <-time.After(2 * requestTimeout):
		t.Fatalf("phase %s: workers still running %v after the node stopped", phase, 2*requestTimeout)
	}
	st.elapsed = time.Since(start)
	return st
}

// verify checks a restarted node against the model, then re-sends every pair
// so that the model knows the fate of each again. With exact, the previous
// incarnation stopped gracefully: every unanswered request must have been
// dropped, and counts must equal the answered pairs.
func (m *crashModel) verify(t *testing.T, p *tallyProc, when string, exact bool) {
	t.Helper()
	lower, upper := m.bounds()
	got := p.counts()
	for i := range crashVideos {
		v := videoName(i)
		c := got[v]
		switch {
		case exact && c != lower[v]:
			t.Errorf("%s: %s has %d views, want exactly the %d acknowledged (%d unanswered)", when, v, c, lower[v], upper[v]-lower[v])
		case c < lower[v]:
			t.Errorf("%s: %s has %d views, fewer than the %d acknowledged: acknowledged views were lost", when, v, c, lower[v])
		case c > upper[v]:
			t.Errorf("%s: %s has %d views, more than the %d distinct pairs acknowledged or unanswered: something counted twice", when, v, c, upper[v])
		}
	}
	if t.Failed() {
		t.FailNow()
	}

	// Every acknowledged pair is a duplicate now, and re-sending changes nothing.
	answered := m.sorted(func(s *pairState) bool { return s.answered })
	parallel(t, p, answered, func(pr pair, v viewAnswer) error {
		if v.Counted || v.Reason != "duplicate" {
			return fmt.Errorf("%s: re-sent acknowledged pair %v: %+v, want a duplicate", when, pr, v)
		}
		return nil
	})
	after := p.counts()
	for v, c := range got {
		if after[v] != c {
			t.Errorf("%s: re-sending acknowledged pairs moved %s from %d to %d", when, v, c, after[v])
		}
	}

	// Re-send unanswered pairs: a duplicate was counted before the stop, a
	// counted one was not. After a graceful stop none may have been counted.
	unknown := m.sorted(func(s *pairState) bool { return s.unknown && !s.answered })
	var wasCounted atomic.Int64
	parallel(t, p, unknown, func(pr pair, v viewAnswer) error {
		if !v.Counted {
			if v.Reason != "duplicate" {
				return fmt.Errorf("%s: re-sent unanswered pair %v: %+v", when, pr, v)
			}
			wasCounted.Add(1)
			if exact {
				return fmt.Errorf("%s: pair %v got no answer before the graceful stop but was counted", when, pr)
			}
		}
		return nil
	})
	m.mu.Lock()
	for _, s := range m.pairs {
		if s.unknown {
			s.unknown, s.answered = false, true
		}
	}
	m.mu.Unlock()

	// Now every pair ever sent is counted exactly once.
	settled, _ := m.bounds()
	final := p.counts()
	for i := range crashVideos {
		v := videoName(i)
		if final[v] != settled[v] {
			t.Errorf("%s: after settling, %s has %d views, want %d distinct pairs", when, v, final[v], settled[v])
		}
	}
	var sum, sumLower uint64
	for _, c := range got {
		sum += c
	}
	for _, c := range lower {
		sumLower += c
	}
	t.Logf("%s: %d views recovered (%d acknowledged); %d unanswered pairs, %d of them had been counted; %d pairs in all",
		when, sum, sumLower, len(unknown), wasCounted.Load(), len(m.pairs))
	if t.Failed() {
		t.FailNow()
	}
}

// parallel re-sends pairs from a few goroutines and checks every answer.
func parallel(t *testing.T, p *tallyProc, pairs []pair, check func(pair, viewAnswer) error) {
	t.Helper()
	work := make(chan pair)
	var wg sync.WaitGroup
	var reported atomic.Int64
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for range 8 {
		wg.Go(func() {
			for pr := range work {
				v, err := p.postView(pr)
				if err == nil {
					err = check(pr, v)
				}
				if err != nil {
					if reported.Add(1) <= 10 {
						t.Error(err)
					}
					cancel()
				}
			}
		})
	}
	for _, pr := range pairs {
		select {
		case work <- pr:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
	}
	close(work)
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
}
