package httpapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strconv"
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

// postView is POST /videos/{videoId}/views, body {"userId":"u"} with an
// optional "timestamp": one view, counted once per user, video and dedup
// window (the seed API; unchanged by event types).
func (s *Server) postView(c echo.Context) error {
	video := videoParam(c)
	if err := region.CheckID(region.CodeInvalidVideoID, "videoId", video); err != nil {
		return err
	}
	body, err := readJSONBody(c, MaxViewBody)
	if err != nil {
		return err
	}
	user, ts, err := decodeViewBody(body)
	if err != nil {
		return err
	}
	res, err := s.node.RecordView(c.Request().Context(), region.View{
		Video: video, User: user, ClientMs: ts, IP: c.RealIP(),
	})
	if err != nil {
		return err
	}
	out := viewResponse{VideoID: video, Counted: res.Counted, ViewCount: res.Count}
	if !res.Counted {
		out.Reason = res.Fate.String()
	}
	// A query string may ask echo for indented JSON (?pretty): c.JSON
	// honours it.
	if c.Request().URL.RawQuery == "" {
		if b, ok := out.appendJSON(make([]byte, 0, 128)); ok {
			return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
		}
	}
	return c.JSON(http.StatusOK, out)
}

// appendJSON appends r as c.JSON would write it (encoding/json, with its
// trailing newline), without reflection: the ingest path's answer. It
// reports false, and the caller encodes r with c.JSON, for a video ID or
// reason with a byte JSON would escape.
func (r viewResponse) appendJSON(b []byte) ([]byte, bool) {
	if !plainJSONString(r.VideoID) || !plainJSONString(r.Reason) {
		return nil, false
	}
	b = append(b, `{"videoId":"`...)
	b = append(b, r.VideoID...)
	b = append(b, `","counted":`...)
	b = strconv.AppendBool(b, r.Counted)
	b = append(b, `,"viewCount":`...)
	b = strconv.AppendUint(b, r.ViewCount, 10)
	if r.Reason != "" {
		b = append(b, `,"reason":"`...)
		b = append(b, r.Reason...)
		b = append(b, '"')
	}
	return append(b, "}\n"...), true
}

// getViews is GET /videos/{videoId}/views: the video's view count, when it
// last changed, and on a replicating node the count per region.
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
	if b, ok := out.appendJSON(make([]byte, 0, 128)); ok {
		return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, b)
	}
	return c.JSON(http.StatusOK, out)
}

// appendJSON appends r as c.JSON would write it (encoding/json, with its
// trailing newline), without reflection: the read path's hottest answer.
// It reports false, and the caller encodes r with c.JSON, for what it does
// not write itself: regions, and a video ID with a byte JSON would escape.
func (r countResponse) appendJSON(b []byte) ([]byte, bool) {
	if len(r.Regions) > 0 || !plainJSONString(r.VideoID) {
		return nil, false
	}
	b = append(b, `{"videoId":"`...)
	b = append(b, r.VideoID...)
	b = append(b, `","viewCount":`...)
	b = strconv.AppendUint(b, r.ViewCount, 10)
	b = append(b, `,"lastUpdated":`...)
	if r.LastUpdated == nil {
		b = append(b, "null"...)
	} else if plainJSONString(*r.LastUpdated) {
		b = append(b, '"')
		b = append(b, *r.LastUpdated...)
		b = append(b, '"')
	} else {
		return nil, false
	}
	return append(b, "}\n"...), true
}

// plainJSONString reports whether encoding/json writes s as is between its
// quotes: printable ASCII other than the quote, the backslash and the bytes
// it escapes for HTML (<, >, &).
func plainJSONString(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20 || c >= 0x7f, c == '"', c == '\\', c == '<', c == '>', c == '&':
			return false
		}
	}
	return true
}

// batchEvent is one element of the POST /v1/events array.
type batchEvent struct {
	VideoID   string          `json:"videoId"`
	UserID    string          `json:"userId"`
	Timestamp json.RawMessage `json:"timestamp"`
	// Event is the event type: "" or "view", "like", "unlike" (takes a like
	// back), or another type the node counts (e.g. "share").
	Event string `json:"event,omitempty"`
}

// eventUnlike is the batch event type of an unlike: a like taken back.
const eventUnlike = "unlike"

// view is the region.View of ev, sent from ip, whose client timestamp is ts.
// A type name longer than any event type is refused here, so that the
// error need not repeat it; any other unknown type is left for the node to
// refuse, like any other invalid field.
func (ev batchEvent) view(ts int64, ip string) (region.View, error) {
	v := region.View{Video: ev.VideoID, User: ev.UserID, ClientMs: ts, IP: ip, Event: ev.Event}
	if ev.Event == eventUnlike {
		v.Event, v.Unlike = region.EventLike, true
	}
	return v, checkEventLen(ev.Event)
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
	// Reason is duplicate (for a like or unlike: the user was already in
	// that state), rate_limited, denied, or an input error code.
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"` // for input errors
}

// postEvents is POST /v1/events: a JSON array of up to MaxBatchEvents events
// ({"videoId","userId","timestamp"?,"event"?}), each recorded as its single
// counterpart would be (a view, a like, an unlike, a share ...). An invalid
// event is refused alone; the answer counts what became of each. For a like
// or unlike, counted means it changed the user's state.
func (s *Server) postEvents(c echo.Context) error {
	body, err := readJSONBody(c, MaxBatchBody)
	if err != nil {
		return err
	}
	events, err := decodeEventsBody(body)
	if err != nil {
		return err
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
		v, err := ev.view(ts, ip)
		if err != nil {
			reject(i, err)
			continue
		}
		views = append(views, v)
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
