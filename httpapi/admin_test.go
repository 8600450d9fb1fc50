package httpapi

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/replication/membership"
	"github.com/tallyhq/tally/store"
)

const testToken = "test-admin-token-0123456789"

// admin sends an admin request with the given Authorization header ("" for none).
func (e *testEnv) admin(method, path, auth, body string) response {
	e.t.Helper()
	req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := e.client.Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b.Bytes()}
}

func TestAdminRoutesNeedTheToken(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.AdminToken = testToken })
	routes := []struct{ method, path, body string }{
		{http.MethodGet, "/v1/audit/events", ""},
		{http.MethodGet, "/v1/admin/gossip-keys", ""},
		{http.MethodPost, "/v1/admin/gossip-keys", `{"action":"install","key":"AAAAAAAAAAAAAAAAAAAAAA=="}`},
		{http.MethodGet, "/debug/pprof/heap", ""},
		{http.MethodGet, "/debug/pprof/profile?seconds=1", ""},
	}
	denied := 0
	for _, r := range routes {
		for _, auth := range []string{"", "Bearer", "Bearer wrong-token", "Basic " + base64.StdEncoding.EncodeToString([]byte("admin:"+testToken)), testToken, "Bearer " + testToken + "x"} {
			got := e.admin(r.method, r.path, auth, r.body)
			wantError(t, got, http.StatusUnauthorized, CodeUnauthorized)
			if h := got.header.Get("WWW-Authenticate"); !strings.HasPrefix(h, "Bearer") {
				t.Errorf("%s %s with %q: WWW-Authenticate %q", r.method, r.path, auth, h)
			}
			denied++
		}
	}
	if got := e.admin(http.MethodGet, "/v1/audit/events", "Bearer "+testToken, ""); got.status != http.StatusOK {
		t.Fatalf("audit with the token: %s", got)
	}
	if got := e.admin(http.MethodGet, "/v1/audit/events", "bearer  "+testToken+" ", ""); got.status != http.StatusOK {
		t.Fatalf("audit with a lower-case scheme and spaces: %s", got)
	}
	if text := scrape(t, e); !strings.Contains(text, fmt.Sprintf("tally_admin_auth_failures_total %d", denied)) {
		t.Errorf("want %d admin auth failures in /metrics", denied)
	}
	// Non-admin routes need nothing.
	if got := e.view("pub", "u1"); !got.Counted {
		t.Fatalf("public view: %+v", got)
	}
}

func TestAdminRoutesOffWithoutToken(t *testing.T) {
	e := newEnv(t, nil)
	for _, auth := range []string{"", "Bearer ", "Bearer anything"} {
		wantError(t, e.admin(http.MethodGet, "/v1/audit/events", auth, ""), http.StatusForbidden, CodeAdminDisabled)
	}
}

// scrape returns the env's /metrics text.
func scrape(t *testing.T, e *testEnv) string {
	t.Helper()
	r := e.do(http.MethodGet, "/metrics", "", nil)
	if r.status != http.StatusOK {
		t.Fatalf("/metrics: %s", r)
	}
	return string(r.body)
}

// expectMetrics fails t (without stopping it) for each of want that the
// /metrics text lacks.
func expectMetrics(t *testing.T, text string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %q", w)
		}
	}
}

// readAudit reads an audit stream: its events and its closing line.
func readAudit(t *testing.T, r response) ([]AuditEvent, AuditEnd) {
	t.Helper()
	if r.status != http.StatusOK {
		t.Fatalf("audit: %s", r)
	}
	if ct := r.header.Get("Content-Type"); ct != ContentTypeNDJSON {
		t.Fatalf("audit Content-Type %q", ct)
	}
	var evs []AuditEvent
	var end AuditEnd
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	ended := false
	for sc.Scan() {
		if ended {
			t.Fatalf("a line after the closing line: %s", sc.Text())
		}
		if strings.HasPrefix(sc.Text(), `{"end":`) {
			strictDecode(t, sc.Bytes(), &end)
			ended = true
			continue
		}
		var ev AuditEvent
		strictDecode(t, sc.Bytes(), &ev)
		evs = append(evs, ev)
	}
	if !ended {
		t.Fatalf("audit stream without a closing line:\n%s", r.body)
	}
	if end.End.Events != int64(len(evs)) {
		t.Fatalf("closing line counts %d events, stream held %d", end.End.Events, len(evs))
	}
	return evs, end
}

func TestAuditEventsStreamsEveryFate(t *testing.T) {
	deny, err := region.ParseDenyList(strings.NewReader("user:bot-1\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnvWith(t, func(c *region.Config) {
		c.UserRate, c.UserBurst = 1, 2
		c.Deny = deny
	}, func(o *Options) { o.AdminToken = testToken; o.NodeName = "solo" })
	auth := "Bearer " + testToken

	e.viewBody("a1", `{"userId":"u1","timestamp":`+ms(testNow.Add(-time.Minute))+`}`) // counted, with a client timestamp
	e.view("a1", "u1")                                                                // duplicate
	e.view("a1", "u1")                                                                // rate limited (burst of 2 used)
	e.view("a1", "bot-1")                                                             // denied
	e.clock.Advance(time.Hour)
	e.view("a2", "u2")

	evs, end := readAudit(t, e.admin(http.MethodGet, "/v1/audit/events", auth, ""))
	var fates []string
	for _, ev := range evs {
		fates = append(fates, ev.Video+":"+ev.User+":"+ev.Fate)
		if ev.Event != region.EventView || ev.Replica != e.node.Identity().Replica.String() || ev.IngestMs <= 0 {
			t.Errorf("event %+v", ev)
		}
	}
	want := "a1:u1:counted a1:u1:duplicate a1:u1:rate_limited a1:bot-1:denied a2:u2:counted"
	if got := strings.Join(fates, " "); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if evs[0].ClientMs != testNow.Add(-time.Minute).UnixMilli() || evs[1].ClientMs != 0 {
		t.Errorf("client timestamps %d, %d", evs[0].ClientMs, evs[1].ClientMs)
	}
	if evs[0].IngestMs != testNow.UnixMilli() || evs[4].IngestMs != testNow.Add(time.Hour).UnixMilli() {
		t.Errorf("ingest times %d, %d", evs[0].IngestMs, evs[4].IngestMs)
	}
	if end.End.Node != "solo" || end.End.DedupWindowMs != (24*time.Hour).Milliseconds() || end.End.Replica != e.node.Identity().Replica.String() {
		t.Errorf("closing line %+v", end)
	}

	// One video; a time range ([from, to), unix ms or RFC 3339).
	evs, _ = readAudit(t, e.admin(http.MethodGet, "/v1/audit/events?videoId=a2", auth, ""))
	if len(evs) != 1 || evs[0].User != "u2" {
		t.Fatalf("videoId=a2: %+v", evs)
	}
	from := testNow.Add(30 * time.Minute).Format(time.RFC3339)
	evs, _ = readAudit(t, e.admin(http.MethodGet, "/v1/audit/events?from="+from, auth, ""))
	if len(evs) != 1 || evs[0].Video != "a2" {
		t.Fatalf("from=%s: %+v", from, evs)
	}
	evs, _ = readAudit(t, e.admin(http.MethodGet, "/v1/audit/events?to="+ms(testNow.Add(time.Hour)), auth, ""))
	if len(evs) != 4 {
		t.Fatalf("to=now+1h (exclusive): %d events", len(evs))
	}

	// The events recompute to the live counts.
	var all []store.Event
	evs, _ = readAudit(t, e.admin(http.MethodGet, "/v1/audit/events", auth, ""))
	for _, ev := range evs {
		f := map[string]store.Fate{"counted": store.FateCounted, "duplicate": store.FateDuplicate, "rate_limited": store.FateRateLimited, "denied": store.FateDenied}[ev.Fate]
		all = append(all, store.Event{Video: ev.Video, Event: ev.Event, User: ev.User, IngestMs: ev.IngestMs, Fate: f})
	}
	for _, ac := range region.Recompute(all, end.End.DedupWindowMs) {
		if c := e.count(ac.Video); c != ac.Expected {
			t.Errorf("video %s: count %d, recomputed %d", ac.Video, c, ac.Expected)
		}
	}

	for _, tc := range []struct{ query, code string }{
		{"from=yesterday", CodeInvalidTimeRange},
		{"to=1.5", CodeInvalidTimeRange},
		{"from=10&to=5", CodeInvalidTimeRange},
		{"videoId=a%20b", region.CodeInvalidVideoID},
	} {
		wantError(t, e.admin(http.MethodGet, "/v1/audit/events?"+tc.query, auth, ""), http.StatusBadRequest, tc.code)
	}
}

func TestFilteredEventsMetric(t *testing.T) {
	deny, err := region.ParseDenyList(strings.NewReader("ip:127.0.0.0/8\n"))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, func(c *region.Config) { c.Deny = deny })
	for i := range 3 {
		if got := e.view("f1", fmt.Sprintf("u%d", i)); got.Counted || got.Reason != "denied" {
			t.Fatalf("view from a denied network: %+v", got)
		}
	}
	if c := e.count("f1"); c != 0 {
		t.Fatalf("denied views counted: %d", c)
	}
	text := scrape(t, e)
	expectMetrics(t, text, `tally_filtered_events_total{reason="denied"} 3`, `tally_ingest_events_total{fate="denied"} 3`)
}

// fakeKeyring records keyring operations.
type fakeKeyring struct {
	ops  []string
	fail error
}

func (k *fakeKeyring) ListKeys() (membership.KeyringStatus, error) {
	return membership.KeyringStatus{Members: 2, Responses: 2, Keys: map[string]int{"k": 2}, PrimaryKeys: map[string]int{"k": 2}}, k.fail
}

func (k *fakeKeyring) op(name, key string) (membership.KeyringStatus, error) {
	k.ops = append(k.ops, name+" "+key)
	if name == "remove" {
		return membership.KeyringStatus{Members: 2, Responses: 2, Errors: 1, Messages: map[string]string{"b": "primary key"}}, k.fail
	}
	return membership.KeyringStatus{Members: 2, Responses: 2}, k.fail
}

func (k *fakeKeyring) InstallKey(key string) (membership.KeyringStatus, error) {
	return k.op("install", key)
}
func (k *fakeKeyring) UseKey(key string) (membership.KeyringStatus, error) { return k.op("use", key) }
func (k *fakeKeyring) RemoveKey(key string) (membership.KeyringStatus, error) {
	return k.op("remove", key)
}

func TestGossipKeysRoutes(t *testing.T) {
	kr := &fakeKeyring{}
	e := newEnvWith(t, nil, func(o *Options) { o.AdminToken = testToken; o.Keyring = kr })
	auth := "Bearer " + testToken
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))

	r := e.admin(http.MethodGet, "/v1/admin/gossip-keys", auth, "")
	var got keyringResponse
	strictDecode(t, r.body, &got)
	if r.status != http.StatusOK || got.Keys["k"] != 2 || got.Members != 2 {
		t.Fatalf("list: %s", r)
	}
	for _, action := range []string{"install", "use"} {
		if r := e.admin(http.MethodPost, "/v1/admin/gossip-keys", auth, `{"action":"`+action+`","key":"`+key+`"}`); r.status != http.StatusOK {
			t.Fatalf("%s: %s", action, r)
		}
	}
	// A member refused: 207, with its message.
	r = e.admin(http.MethodPost, "/v1/admin/gossip-keys", auth, `{"action":"remove","key":"`+key+`"}`)
	strictDecode(t, r.body, &got)
	if r.status != http.StatusMultiStatus || got.Errors != 1 || got.Messages["b"] == "" {
		t.Fatalf("remove refused by a member: %s", r)
	}
	if want := "install " + key + ",use " + key + ",remove " + key; strings.Join(kr.ops, ",") != want {
		t.Fatalf("operations %q", kr.ops)
	}

	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"action":"install","key":"short"}`, 400, CodeInvalidKey},
		{`{"action":"install"}`, 400, CodeInvalidKey},
		{`{"action":"rotate","key":"` + key + `"}`, 400, CodeInvalidAction},
		{`{"action":`, 400, CodeMalformedJSON},
	} {
		wantError(t, e.admin(http.MethodPost, "/v1/admin/gossip-keys", auth, tc.body), tc.status, tc.code)
	}
	if len(kr.ops) != 3 {
		t.Fatalf("refused requests reached the keyring: %q", kr.ops)
	}

	kr.fail = membership.ErrNoKeyring
	wantError(t, e.admin(http.MethodGet, "/v1/admin/gossip-keys", auth, ""), http.StatusConflict, CodeNoKeyring)
	kr.fail = errors.New("query timed out")
	wantError(t, e.admin(http.MethodGet, "/v1/admin/gossip-keys", auth, ""), http.StatusBadGateway, CodeUnavailable)

	// A node that does not gossip has no keyring.
	solo := newEnvWith(t, nil, func(o *Options) { o.AdminToken = testToken })
	wantError(t, solo.admin(http.MethodGet, "/v1/admin/gossip-keys", auth, ""), http.StatusConflict, CodeNoKeyring)
}

// The answer to the audit stream has a JSON closing line that decodes with
// json.Unmarshal as well (clients in other languages).
func TestAuditEndLineIsJSON(t *testing.T) {
	var end AuditEnd
	end.End.Events = 3
	b, _ := json.Marshal(end)
	if !strings.HasPrefix(string(b), `{"end":{"events":3`) {
		t.Fatalf("closing line %s", b)
	}
}

// TestAuditStreamOutlivesWriteTimeout reads a long audit stream slowly
// through a server whose write timeout is far shorter than the read: the
// stream extends its deadline as it goes, so it still ends complete.
func TestAuditStreamOutlivesWriteTimeout(t *testing.T) {
	addr, e := serveReal(t, Options{AdminToken: testToken, WriteTimeout: 300 * time.Millisecond})
	const n = 3 * auditFlushEvery
	views := make([]region.View, 0, 1000)
	for i := range n {
		views = append(views, region.View{Video: fmt.Sprintf("slow-%d", i%7), User: fmt.Sprintf("u%d", i)})
		if len(views) == cap(views) || i == n-1 {
			if _, err := e.node.RecordViews(t.Context(), views); err != nil {
				t.Fatal(err)
			}
			views = views[:0]
		}
	}
	req, _ := http.NewRequest(http.MethodGet, "http://"+addr+"/v1/audit/events", nil)
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	start := time.Now()
	var body bytes.Buffer
	buf := make([]byte, 32<<10)
	for {
		k, err := resp.Body.Read(buf)
		body.Write(buf[:k])
		if err != nil {
			break
		}
		time.Sleep(20 * time.Millisecond) // a slow reader, on purpose
	}
	evs, end := readAudit(t, response{status: resp.StatusCode, header: resp.Header, body: body.Bytes()})
	if len(evs) != n || end.End.Events != n {
		t.Fatalf("%d events, closing line %+v; want %d", len(evs), end, n)
	}
	t.Logf("read %d bytes in %v through a 300ms write timeout", body.Len(), time.Since(start).Round(time.Millisecond))
}

// TestDebugPprof: with the admin token, /debug/pprof/ serves the runtime's
// profiles (gzipped protobuf), a CPU profile and an execution trace over
// ?seconds=; not the command line, and no seconds out of range.
func TestDebugPprof(t *testing.T) {
	e := newEnvWith(t, nil, func(o *Options) { o.AdminToken = testToken })
	auth := "Bearer " + testToken
	if got := e.admin(http.MethodGet, "/debug/pprof/", auth, ""); got.status != http.StatusOK || !bytes.Contains(got.body, []byte("heap")) {
		t.Fatalf("index: %s", got)
	}
	for _, path := range []string{"/debug/pprof/heap", "/debug/pprof/allocs", "/debug/pprof/goroutine", "/debug/pprof/profile?seconds=1"} {
		got := e.admin(http.MethodGet, path, auth, "")
		if got.status != http.StatusOK || !bytes.HasPrefix(got.body, []byte{0x1f, 0x8b}) {
			t.Fatalf("%s: %d, %d bytes starting %q; want a gzipped profile", path, got.status, len(got.body), got.body[:min(len(got.body), 16)])
		}
	}
	if got := e.admin(http.MethodGet, "/debug/pprof/trace?seconds=1", auth, ""); got.status != http.StatusOK || !bytes.HasPrefix(got.body, []byte("go 1.")) {
		t.Fatalf("trace: %d, %d bytes starting %q", got.status, len(got.body), got.body[:min(len(got.body), 16)])
	}
	wantError(t, e.admin(http.MethodGet, "/debug/pprof/cmdline", auth, ""), http.StatusNotFound, CodeNotFound)
	for _, bad := range []string{"0", "121", "x", "-1"} {
		wantError(t, e.admin(http.MethodGet, "/debug/pprof/profile?seconds="+bad, auth, ""), http.StatusBadRequest, CodeInvalidSeconds)
	}
	if got := e.admin(http.MethodGet, "/debug/pprof/nonesuch", auth, ""); got.status != http.StatusNotFound {
		t.Fatalf("unknown profile: %s", got)
	}
}
