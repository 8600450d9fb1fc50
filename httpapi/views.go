package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// viewRequest is the body of POST /videos/{id}/views.
type viewRequest struct {
	UserID    *string         `json:"userId"`
	Timestamp json.RawMessage `json:"timestamp"`
}

// viewResponse answers POST /videos/{id}/views.
type viewResponse struct {
	VideoID   string `json:"videoId"`
	Counted   bool   `json:"counted"`
	ViewCount uint64 `json:"viewCount"`
	Reason    string `json:"reason,omitempty"` // why not counted: duplicate, rate_limited
}

// countResponse answers GET /videos/{id}/views.
type countResponse struct {
	VideoID     string  `json:"videoId"`
	ViewCount   uint64  `json:"viewCount"`
	LastUpdated *string `json:"lastUpdated"` // RFC 3339 UTC, null if never viewed
	// Regions splits the count by the region that counted each view; only
	// on nodes that replicate.
	Regions map[string]uint64 `json:"regions,omitempty"`
}

// videoParam is the path's videoId, percent-decoded (echo hands it over
// still escaped when the path had escapes, as encodeURIComponent makes them).
func videoParam(c echo.Context) string {
	v := c.Param("videoId")
	if u, err := url.PathUnescape(v); err == nil {
		return u
	}
	return v // an invalid escape stays as sent and fails ID validation
}

func (s *Server) postView(c echo.Context) error {
	video := videoParam(c)
	if err := region.CheckID(region.CodeInvalidVideoID, "videoId", video); err != nil {
		return err
	}
	body, err := readJSONBody(c, MaxViewBody)
	if err != nil {
		return err
	}
	var req viewRequest
	if err := decodeStrict(body, &req); err != nil {
		return err
	}
	if req.UserID == nil {
		return &region.InputError{Code: region.CodeInvalidUserID, Message: "userId is missing"}
	}
	ts, err := parseTimestamp(req.Timestamp)
	if err != nil {
		return err
	}
	res, err := s.node.RecordView(c.Request().Context(), region.View{
		Video: video, User: *req.UserID, ClientMs: ts, IP: c.RealIP(),
	})
	if err != nil {
		return err
	}
	out := viewResponse{VideoID: video, Counted: res.Counted, ViewCount: res.Count}
	if !res.Counted {
		out.Reason = res.Fate.String()
	}
	return c.JSON(http.StatusOK, out)
}

func (s *Server) getViews(c echo.Context) error {
	video := videoParam(c)
	cnt, err := s.node.Views(video)
	if err != nil {
		return err
	}
	out := countResponse{VideoID: video, ViewCount: cnt.Value}
	if !cnt.LastUpdated.IsZero() {
		t := cnt.LastUpdated.UTC().Format(time.RFC3339Nano)
		out.LastUpdated = &t
	}
	if s.node.Replicating() && cnt.Value > 0 {
		if out.Regions, err = s.node.RegionViews(video); err != nil {
			return err
		}
	}
	return c.JSON(http.StatusOK, out)
}

// batchEvent is one element of the POST /v1/events array.
type batchEvent struct {
	VideoID   string          `json:"videoId"`
	UserID    string          `json:"userId"`
	Timestamp json.RawMessage `json:"timestamp"`
}

// batchResponse answers POST /v1/events.
type batchResponse struct {
	Received   int            `json:"received"`
	Counted    int            `json:"counted"`
	Rejected   int            `json:"rejected"` // invalid events (see notCounted)
	NotCounted []notCountedJS `json:"notCounted"`
}

type notCountedJS struct {
	Index   int    `json:"index"`
	VideoID string `json:"videoId"`
	Reason  string `json:"reason"`            // duplicate, rate_limited, or an input error code
	Message string `json:"message,omitempty"` // for input errors
}

func (s *Server) postEvents(c echo.Context) error {
	body, err := readJSONBody(c, MaxBatchBody)
	if err != nil {
		return err
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return errf(http.StatusBadRequest, CodeMalformedJSON, "body must be a JSON array of events")
	}
	var events []batchEvent
	if err := decodeStrict(body, &events); err != nil {
		return err
	}
	if len(events) > MaxBatchEvents {
		return errf(http.StatusRequestEntityTooLarge, CodeTooManyEvents, "%d events in one batch; at most %d allowed", len(events), MaxBatchEvents)
	}
	out := batchResponse{Received: len(events), NotCounted: []notCountedJS{}}
	reject := func(i int, err error) {
		ae := classify(err)
		out.Rejected++
		out.NotCounted = append(out.NotCounted, notCountedJS{Index: i, VideoID: events[i].VideoID, Reason: ae.Code, Message: ae.Message})
	}
	views := make([]region.View, 0, len(events))
	index := make([]int, 0, len(events)) // views[j] is events[index[j]]
	ip := c.RealIP()
	for i, ev := range events {
		ts, err := parseTimestamp(ev.Timestamp)
		if err != nil {
			reject(i, err)
			continue
		}
		views = append(views, region.View{Video: ev.VideoID, User: ev.UserID, ClientMs: ts, IP: ip})
		index = append(index, i)
	}
	results, err := s.node.RecordViews(c.Request().Context(), views)
	if err != nil {
		return err
	}
	for j, r := range results {
		i := index[j]
		switch {
		case r.Err != nil:
			reject(i, r.Err)
		case r.Counted:
			out.Counted++
		default:
			out.NotCounted = append(out.NotCounted, notCountedJS{Index: i, VideoID: events[i].VideoID, Reason: r.Fate.String()})
		}
	}
	slices.SortFunc(out.NotCounted, func(a, b notCountedJS) int { return a.Index - b.Index })
	return c.JSON(http.StatusOK, out)
}

// readJSONBody checks the content type and reads at most limit bytes.
func readJSONBody(c echo.Context, limit int64) ([]byte, error) {
	req := c.Request()
	ct := req.Header.Get(echo.HeaderContentType)
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil || (mt != "application/json" && !strings.HasSuffix(mt, "+json")) {
		return nil, errf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type %q: want application/json", ct)
	}
	if req.ContentLength > limit {
		return nil, errf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body of %d bytes; at most %d allowed", req.ContentLength, limit)
	}
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, limit))
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		return nil, errf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body larger than %d bytes", limit)
	case err != nil:
		return nil, errf(http.StatusBadRequest, CodeMalformedJSON, "read body: %v", err)
	}
	return body, nil
}

// decodeStrict decodes exactly one JSON value from body into v.
func decodeStrict(body []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(v); err != nil {
		return errf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON body: data after the JSON value")
	}
	return nil
}

// parseTimestamp accepts unix milliseconds (a JSON integer) or an RFC 3339
// string; absent or null gives 0 (use the server's clock).
func parseTimestamp(raw json.RawMessage) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	bad := func(why string) error {
		return &region.InputError{Code: region.CodeInvalidTimestamp, Message: "timestamp " + why + `: want unix milliseconds (e.g. 1732250000000) or an RFC 3339 string (e.g. "2026-11-22T05:00:00Z")`}
	}
	var ms int64
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, bad("is not a valid string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return 0, bad(strconv.Quote(s) + " is not RFC 3339")
		}
		ms = t.UnixMilli()
	} else {
		v, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			if len(raw) > 40 {
				return 0, bad("is not an integer")
			}
			return 0, bad(string(raw) + " is not an integer")
		}
		ms = v
	}
	if ms <= 0 {
		return 0, bad("must be after 1970-01-01")
	}
	return ms, nil
}
