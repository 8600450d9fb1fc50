package httpapi

import (
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// Trending: GET /v1/top answers the videos with the most events of one type
// in a recent window ("1h", "24h", "7d" by default), from the time buckets
// this node holds (its own and those replicated to it). A list is reused for
// up to a second, so it may trail the counts by that much.

// Defaults of GET /v1/top.
const (
	defaultTopWindow = "1h"
	defaultTopK      = 10
)

// topResponse answers GET /v1/top.
type topResponse struct {
	Event  string       `json:"event"`
	Window string       `json:"window"`
	K      int          `json:"k"`
	Videos []topVideoJS `json:"videos"` // highest count first; never null
}

type topVideoJS struct {
	VideoID string `json:"videoId"`
	Count   uint64 `json:"count"` // events in the window
}

// getTop is GET /v1/top?event=&window=&k=: the k (default 10, at most
// region.MaxTopK) videos with the most events of event (default view) in
// window (default 1h), highest first.
func (s *Server) getTop(c echo.Context) error {
	event, err := eventParam(c)
	if err != nil {
		return err
	}
	window := queryOr(c, "window", defaultTopWindow)
	k := defaultTopK
	if v := c.QueryParam("k"); v != "" {
		if k, err = strconv.Atoi(v); err != nil {
			return &region.InputError{Code: region.CodeInvalidK, Message: "k " + quoteShort(v) + " is not an integer; want 1 to " + strconv.Itoa(region.MaxTopK)}
		}
	}
	top, err := s.node.Top(event, window, k)
	if err != nil {
		return err
	}
	out := topResponse{Event: event, Window: window, K: k, Videos: make([]topVideoJS, len(top))}
	for i, v := range top {
		out.Videos[i] = topVideoJS{VideoID: v.Video, Count: v.Count}
	}
	return c.JSON(http.StatusOK, out)
}
