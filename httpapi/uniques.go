package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// Unique viewers: a HyperLogLog sketch per video, fed by counted views and
// merged register-wise across regions, so the estimate converges like the
// counts do.

// uniqueViewersResponse answers GET /v1/videos/{id}/unique-viewers.
type uniqueViewersResponse struct {
	VideoID       string  `json:"videoId"`
	UniqueViewers uint64  `json:"uniqueViewers"`
	Approx        bool    `json:"approx"`        // always true: a HyperLogLog estimate
	StandardError float64 `json:"standardError"` // relative, e.g. 0.0081 = 0.81%
}

// uniqueViewersStdErr is the relative standard error of the node's
// HyperLogLog sketches (precision 14: 1.04/√16384).
const uniqueViewersStdErr = region.UniqueViewersStdError

// getUniqueViewers is GET /v1/videos/{videoId}/unique-viewers: an estimate
// of the distinct users who viewed the video, merged across regions.
func (s *Server) getUniqueViewers(c echo.Context) error {
	video := videoParam(c)
	n, err := s.node.UniqueViewers(video)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, uniqueViewersResponse{VideoID: video, UniqueViewers: n, Approx: true, StandardError: uniqueViewersStdErr})
}
