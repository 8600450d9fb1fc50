package httpapi

import (
	"bufio"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// GET /v1/audit/events streams the node's raw event log as NDJSON (one JSON
// object per line): every event with its fate, in ingest order, then one
// closing line, AuditEnd, that says the stream is complete. A stream that
// ends without it (the node failed mid-way, the connection broke) is
// incomplete and must not be audited.

// ContentTypeNDJSON is the media type of the audit stream.
const ContentTypeNDJSON = "application/x-ndjson"

// CodeInvalidTimeRange: from or to of an audit query does not parse, or
// from is after to (400).
const CodeInvalidTimeRange = "invalid_time_range"

// Audit stream pacing.
const (
	// auditFlushEvery events, the stream is flushed to the client.
	auditFlushEvery = 4096
	// auditWriteWindow is how long one flush may take: the server's write
	// timeout would otherwise cut every stream longer than it.
	auditWriteWindow = 30 * time.Second
)

// AuditEvent is one line of the audit stream: a raw event as the node logged
// it.
type AuditEvent struct {
	Video    string `json:"videoId"`
	Event    string `json:"event"`
	User     string `json:"userId"`
	ClientMs int64  `json:"clientMs,omitempty"` // the client's timestamp; 0 if it sent none
	IngestMs int64  `json:"ingestMs"`           // the node's clock at ingest (decides the dedup window)
	Replica  string `json:"replica"`            // the replica that ingested it (16 hex digits)
	Fate     string `json:"fate"`               // counted, duplicate, rate_limited, denied, compensated
}

// AuditEnd is the last line of a complete audit stream.
type AuditEnd struct {
	End struct {
		Events        int64  `json:"events"`        // event lines sent
		Node          string `json:"node"`          // the node's name
		Replica       string `json:"replica"`       // its current replica ID
		DedupWindowMs int64  `json:"dedupWindowMs"` // its dedup window
		FromMs        int64  `json:"fromMs"`
		ToMs          int64  `json:"toMs"`
	} `json:"end"`
}

// errClientGone stops an audit stream whose client stopped reading.
var errClientGone = errors.New("audit client gone")

// auditError is the last line of a stream that failed after it started.
type auditError struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// parseAuditTime reads a from/to bound: unix milliseconds or RFC 3339.
func parseAuditTime(name, v string, dflt int64) (int64, error) {
	if v == "" {
		return dflt, nil
	}
	if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
		return ms, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, errf(http.StatusBadRequest, CodeInvalidTimeRange, "%s=%q: want unix milliseconds or RFC 3339", name, v)
	}
	return t.UnixMilli(), nil
}

func (s *Server) auditEvents(c echo.Context) error {
	q := c.QueryParams()
	video := q.Get("videoId")
	if video != "" {
		if err := region.CheckID(region.CodeInvalidVideoID, "videoId", video); err != nil {
			return err
		}
	}
	from, err := parseAuditTime("from", q.Get("from"), 0)
	if err != nil {
		return err
	}
	to, err := parseAuditTime("to", q.Get("to"), math.MaxInt64)
	if err != nil {
		return err
	}
	if from > to {
		return errf(http.StatusBadRequest, CodeInvalidTimeRange, "from %d is after to %d", from, to)
	}

	resp := c.Response()
	resp.Header().Set(echo.HeaderContentType, ContentTypeNDJSON)
	resp.Header().Set(echo.HeaderCacheControl, "no-store")
	resp.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(resp.Writer)
	w := bufio.NewWriterSize(resp, 64<<10)
	enc := json.NewEncoder(w)
	var n int64
	flush := func() error {
		// An extended deadline is best effort: a writer without deadlines
		// (a test recorder) has nothing to extend.
		_ = rc.SetWriteDeadline(time.Now().Add(auditWriteWindow))
		if err := w.Flush(); err != nil {
			return err
		}
		resp.Flush()
		return nil
	}
	if err := flush(); err != nil {
		return nil // the client went away; nothing to answer
	}
	err = s.node.AuditEvents(from, to, video, func(ev store.Event) error {
		if err := enc.Encode(AuditEvent{
			Video: ev.Video, Event: ev.Event, User: ev.User, ClientMs: ev.ClientMs,
			IngestMs: ev.IngestMs, Replica: ev.Replica.String(), Fate: ev.Fate.String(),
		}); err != nil {
			return errClientGone
		}
		if n++; n%auditFlushEvery == 0 && flush() != nil {
			return errClientGone
		}
		return nil
	})
	switch {
	case errors.Is(err, errClientGone):
		return nil
	case err != nil:
		// The status is sent: say what failed in the stream's last line,
		// which is not AuditEnd, so the client knows it is incomplete.
		requestLogger(c, s.log).Error("audit stream failed", "err", err, "events", n)
		ae := classify(err)
		var line auditError
		line.Error.Code, line.Error.Message = ae.Code, ae.Message
		if enc.Encode(line) == nil {
			flush() //nolint:errcheck // the stream is over either way
		}
		return nil
	}
	var end AuditEnd
	end.End.Events, end.End.Node, end.End.Replica = n, s.nodeName(), s.node.Identity().Replica.String()
	end.End.DedupWindowMs, end.End.FromMs, end.End.ToMs = s.node.DedupWindowMs(), from, to
	if enc.Encode(end) == nil {
		flush() //nolint:errcheck // a client that left gets no end line, as it should
	}
	return nil
}

// nodeName is the node's cluster name when it replicates, else its
// configured name.
func (s *Server) nodeName() string {
	if cs := s.node.ClusterStatus(); cs.Enabled {
		return string(cs.Engine.Self)
	}
	return s.opts.NodeName
}
