package httpapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/crdt"
	"github.com/tallyhq/tally/region"
)

// Time series: GET /v1/videos/{id}/counts answers the count of one event per
// minute, hour or day bucket over a range, from the node's time buckets
// (bucketed by the ingesting node's clock, UTC).

// Defaults of GET /v1/videos/{id}/counts.
const (
	defaultSeriesRange = time.Hour
	defaultSeriesStep  = crdt.Minute
)

// seriesResponse answers GET /v1/videos/{id}/counts.
type seriesResponse struct {
	VideoID string `json:"videoId"`
	Event   string `json:"event"`
	Step    string `json:"step"` // minute, hour or day
	// From and To are the range actually covered (RFC 3339 UTC): the one
	// asked for, widened to whole buckets.
	From string `json:"from"`
	To   string `json:"to"`
	// Total is Σ points. For likes, a point is the likes minus the unlikes
	// made in its bucket, so a point (never the total of a whole history)
	// can be negative.
	Total  int64         `json:"total"`
	Points []pointResult `json:"points"`
}

// pointResult is one bucket of a series.
type pointResult struct {
	Start string `json:"start"` // the bucket's start, RFC 3339 UTC
	Count int64  `json:"count"`
}

// getCounts is GET /v1/videos/{videoId}/counts?event=&from=&to=&step=: the
// count of event (default view) per step (minute, hour or day; default
// minute) over [from, to). from and to are RFC 3339 or unix milliseconds; to
// defaults to now on the node's clock, from to an hour before to.
func (s *Server) getCounts(c echo.Context) error {
	video := videoParam(c)
	if err := region.CheckID(region.CodeInvalidVideoID, "videoId", video); err != nil {
		return err
	}
	event, err := eventParam(c)
	if err != nil {
		return err
	}
	step := defaultSeriesStep
	if v := c.QueryParam("step"); v != "" {
		var ok bool
		if step, ok = crdt.ParseResolution(v); !ok {
			return &region.InputError{Code: region.CodeInvalidStep, Message: "step " + quoteShort(v) + " is not one of minute, hour, day"}
		}
	}
	to := s.now().UTC()
	if v := c.QueryParam("to"); v != "" {
		t, err := parseQueryTime("to", v)
		if err != nil {
			return err
		}
		to = t
	}
	from := to.Add(-defaultSeriesRange)
	if v := c.QueryParam("from"); v != "" {
		t, err := parseQueryTime("from", v)
		if err != nil {
			return err
		}
		from = t
	}
	ser, err := s.node.Series(video, event, from, to, step)
	if err != nil {
		return err
	}
	out := seriesResponse{
		VideoID: video, Event: ser.Event, Step: ser.Step.String(),
		From: ser.From.UTC().Format(time.RFC3339), To: ser.To.UTC().Format(time.RFC3339),
		Total: ser.Total, Points: make([]pointResult, len(ser.Points)),
	}
	for i, p := range ser.Points {
		out.Points[i] = pointResult{Start: p.Start.UTC().Format(time.RFC3339), Count: p.Count}
	}
	return c.JSON(http.StatusOK, out)
}

// queryOr is the query parameter name, or def when it is absent or empty.
func queryOr(c echo.Context, name, def string) string {
	if v := c.QueryParam(name); v != "" {
		return v
	}
	return def
}

// eventParam is the event query parameter: view when absent or empty. A
// name longer than any event type is refused here, so that the error message
// need not repeat it.
func eventParam(c echo.Context) (string, error) {
	ev := queryOr(c, "event", region.EventView)
	return ev, checkEventLen(ev)
}

// checkEventLen refuses an event type name longer than any the node counts.
func checkEventLen(ev string) error {
	if len(ev) > region.MaxEventLen {
		return &region.InputError{Code: region.CodeUnknownEvent, Message: "event type of " + strconv.Itoa(len(ev)) + " bytes; no event type is longer than " + strconv.Itoa(region.MaxEventLen)}
	}
	return nil
}

// quoteShort quotes s for an error message, cut to 64 bytes: query values
// come from the client and may be long.
func quoteShort(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strconv.Quote(s)
}
