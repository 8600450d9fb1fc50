package httpapi

import (
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
	"github.com/tallyhq/tally/store"
)

// Likes. A user likes a video at most once: liking again, or taking back a
// like that is not there, changes nothing and answers 200 with
// changed:false, so a client may retry either request as often as it likes
// (after a failover to another region too; the node's like/unlike claims
// make each transition count once across regions). The count never goes
// below zero.

// likeResponse answers POST /v1/likes and DELETE /v1/likes/{id}.
type likeResponse struct {
	VideoID string `json:"videoId"`
	UserID  string `json:"userId"`
	// Liked is the state the request asked for: true for a like, false for
	// an unlike. Unless Reason is set, it is the user's state now.
	Liked bool `json:"liked"`
	// Changed says the request changed the user's state (and the count).
	Changed bool   `json:"changed"`
	Count   uint64 `json:"count"` // the video's like count after the request
	Approx  bool   `json:"approx"`
	// Reason, set only when the request was not applied at all, says why:
	// rate_limited or denied. The user's state is then unchanged.
	Reason string `json:"reason,omitempty"`
}

// likeCountResponse answers GET /v1/likes/{id}.
type likeCountResponse struct {
	VideoID string `json:"videoId"`
	Count   uint64 `json:"count"`
	Approx  bool   `json:"approx"`
}

// postLike is POST /v1/likes, body {"videoId":"v","userId":"u"} with an
// optional "timestamp" (as for views): the user likes the video.
func (s *Server) postLike(c echo.Context) error {
	body, err := readJSONBody(c, MaxViewBody)
	if err != nil {
		return err
	}
	video, user, ts, err := decodeLikeBody(body)
	if err != nil {
		return err
	}
	return s.recordLike(c, video, user, ts, true)
}

// deleteLike is DELETE /v1/likes/{videoId}, body {"userId":"u"} with an
// optional "timestamp": the user takes their like of the video back.
func (s *Server) deleteLike(c echo.Context) error {
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
	return s.recordLike(c, video, user, ts, false)
}

// recordLike records a like (or, with like false, an unlike) and answers it.
func (s *Server) recordLike(c echo.Context, video, user string, clientMs int64, like bool) error {
	res, err := s.node.RecordView(c.Request().Context(), region.View{
		Video: video, User: user, ClientMs: clientMs, IP: c.RealIP(),
		Event: region.EventLike, Unlike: !like,
	})
	if err != nil {
		return err
	}
	out := likeResponse{VideoID: video, UserID: user, Liked: like, Changed: res.Counted, Count: res.Count}
	if res.Fate != store.FateCounted && res.Fate != store.FateDuplicate {
		out.Reason = res.Fate.String()
	}
	return c.JSON(http.StatusOK, out)
}

// getLikes is GET /v1/likes/{videoId}: how many users like the video, as
// this node knows it (exact, never negative; the same number a like or
// unlike answers with). A video never liked has count 0.
func (s *Server) getLikes(c echo.Context) error {
	video := videoParam(c)
	n, err := s.node.Likes(video)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, likeCountResponse{VideoID: video, Count: n})
}
