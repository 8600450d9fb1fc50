package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/httpapi"
	"github.com/tallyhq/tally/store"
)

// The audit's HTTP side: finding every node of a cluster, pulling its raw
// event log, reading its counts. Everything a node answers is untrusted
// input: answers are size-bounded and the event stream is decoded line by
// line with a bounded line length (FuzzDecodeAuditStream).

// Bounds of what the audit reads from a node.
const (
	// maxAuditLine bounds one line of the audit stream: an event of two
	// 128-byte IDs and its numbers takes well under 1 KiB.
	maxAuditLine = 16 << 10
	// maxSmallAnswer bounds a status or count answer.
	maxSmallAnswer = 4 << 20
)

// errIncompleteStream: an audit stream ended without its closing line.
var errIncompleteStream = errors.New("audit stream incomplete")

// auditClient talks to the nodes of one cluster.
type auditClient struct {
	http  *http.Client
	token string
}

func newAuditClient(token string, tlsConf *tls.Config, timeout time.Duration) *auditClient {
	return &auditClient{
		token: token,
		http: &http.Client{Transport: &http.Transport{
			TLSClientConfig:       tlsConf,
			ResponseHeaderTimeout: timeout,
			MaxIdleConnsPerHost:   16,
			IdleConnTimeout:       30 * time.Second,
		}},
	}
}

func (c *auditClient) close() { c.http.CloseIdleConnections() }

// baseURL normalises an endpoint: a bare host:port means http.
func baseURL(endpoint string) (string, error) {
	e := strings.TrimRight(strings.TrimSpace(endpoint), "/")
	if !strings.Contains(e, "://") {
		e = "http://" + e
	}
	u, err := url.Parse(e)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") {
		return "", fmt.Errorf("endpoint %q: want http(s)://host:port or host:port", endpoint)
	}
	return u.Scheme + "://" + u.Host, nil
}

// nodeStatus is what the audit reads of GET /v1/status.
type nodeStatus struct {
	Name          string `json:"name"`
	Region        string `json:"region"`
	Replica       string `json:"replica"`
	DedupWindowMs int64  `json:"dedupWindowMs"`
	Replication   struct {
		Enabled bool `json:"enabled"`
		Peers   []struct {
			Name     string `json:"name"`
			Region   string `json:"region"`
			HTTPAddr string `json:"httpAddr"`
		} `json:"peers"`
	} `json:"replication"`
}

// get reads a small JSON answer into v.
func (c *auditClient) get(ctx context.Context, u string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSmallAnswer))
	if err != nil {
		return fmt.Errorf("GET %s: read answer: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s: %s", u, resp.Status, bytes.TrimSpace(body))
	}
	if err := json.Unmarshal(body, v); err != nil {
		return fmt.Errorf("GET %s: decode answer: %w", u, err)
	}
	return nil
}

func (c *auditClient) status(ctx context.Context, base string) (nodeStatus, error) {
	var st nodeStatus
	if err := c.get(ctx, base+"/v1/status", &st); err != nil {
		return st, err
	}
	if _, err := crdt.ParseReplicaID(st.Replica); err != nil {
		return st, fmt.Errorf("status of %s: %w", base, err)
	}
	if st.DedupWindowMs <= 0 {
		return st, fmt.Errorf("status of %s: no dedup window (a tally older than the audit?)", base)
	}
	return st, nil
}

// count reads a node's view count of video.
func (c *auditClient) count(ctx context.Context, base, video string) (uint64, error) {
	var cr struct {
		ViewCount *uint64 `json:"viewCount"`
	}
	if err := c.get(ctx, base+"/videos/"+url.PathEscape(video)+"/views", &cr); err != nil {
		return 0, err
	}
	if cr.ViewCount == nil {
		return 0, fmt.Errorf("count of %s on %s: no viewCount in the answer", video, base)
	}
	return *cr.ViewCount, nil
}

// events streams a node's raw event log (of one video, or all if video is
// "") to fn and returns the stream's closing line.
func (c *auditClient) events(ctx context.Context, base, video string, fn func(store.Event) error) (httpapi.AuditEnd, error) {
	q := url.Values{}
	if video != "" {
		q.Set("videoId", video)
	}
	u := base + "/v1/audit/events"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return httpapi.AuditEnd{}, fmt.Errorf("GET %s: %w", u, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return httpapi.AuditEnd{}, fmt.Errorf("GET %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxSmallAnswer))
		hint := ""
		if resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden {
			hint = " (give the nodes' admin token: --admin-token or TALLY_ADMIN_TOKEN)"
		}
		return httpapi.AuditEnd{}, fmt.Errorf("GET %s: %s: %s%s", u, resp.Status, bytes.TrimSpace(body), hint)
	}
	end, err := decodeAuditStream(resp.Body, fn)
	if err != nil {
		return end, fmt.Errorf("audit log of %s: %w", base, err)
	}
	return end, nil
}

// auditLine is any line of the audit stream: an event, the closing line, or
// an error that cut the stream short.
type auditLine struct {
	httpapi.AuditEvent
	End   *json.RawMessage `json:"end"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// fateByName inverts store.Fate.String for the fates the log holds.
var fateByName = map[string]store.Fate{}

func init() {
	for _, f := range []store.Fate{store.FateCounted, store.FateDuplicate, store.FateRateLimited, store.FateCompensated, store.FateDenied, store.FateReapplied} {
		fateByName[f.String()] = f
	}
}

// decodeAuditStream decodes an audit stream from r, calling fn with each
// event. It fails on a malformed or over-long line, on an error line, on
// anything after the closing line, and on a stream without one
// (errIncompleteStream) or whose event count disagrees with it.
func decodeAuditStream(r io.Reader, fn func(store.Event) error) (httpapi.AuditEnd, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 4096), maxAuditLine)
	var end httpapi.AuditEnd
	var n int64
	done := false
	for line := 1; sc.Scan(); line++ {
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		if done {
			return end, fmt.Errorf("line %d: data after the closing line", line)
		}
		var l auditLine
		if err := json.Unmarshal(b, &l); err != nil {
			return end, fmt.Errorf("line %d: %w", line, err)
		}
		switch {
		case l.Error != nil:
			return end, fmt.Errorf("line %d: the node failed mid-stream: %s: %s", line, l.Error.Code, l.Error.Message)
		case l.End != nil:
			if err := json.Unmarshal(b, &end); err != nil {
				return end, fmt.Errorf("line %d: closing line: %w", line, err)
			}
			if end.End.Events != n {
				return end, fmt.Errorf("closing line counts %d events, the stream held %d", end.End.Events, n)
			}
			done = true
			continue
		}
		ev, err := storeEvent(l.AuditEvent)
		if err != nil {
			return end, fmt.Errorf("line %d: %w", line, err)
		}
		n++
		if err := fn(ev); err != nil {
			return end, err
		}
	}
	if err := sc.Err(); err != nil {
		return end, fmt.Errorf("read audit stream: %w", err)
	}
	if !done {
		return end, fmt.Errorf("%w after %d events: no closing line", errIncompleteStream, n)
	}
	return end, nil
}

// storeEvent converts an audit line back to the event the node logged.
func storeEvent(a httpapi.AuditEvent) (store.Event, error) {
	rep, err := crdt.ParseReplicaID(a.Replica)
	if err != nil {
		return store.Event{}, err
	}
	f, ok := fateByName[a.Fate]
	if !ok {
		return store.Event{}, fmt.Errorf("unknown fate %q", a.Fate)
	}
	if a.Video == "" || a.Event == "" || a.IngestMs <= 0 {
		return store.Event{}, fmt.Errorf("event without video, event type or ingest time: %+v", a)
	}
	return store.Event{Video: a.Video, Event: a.Event, User: a.User, ClientMs: a.ClientMs, IngestMs: a.IngestMs, Replica: rep, Fate: f}, nil
}
