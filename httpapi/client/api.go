package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"
)

// ViewResult is the answer to RecordView.
type ViewResult struct {
	VideoID string
	// Counted is false for a view already counted in its dedup window (in any
	// region: a resend after a lost answer comes back counted:false) or one
	// over a rate limit; Reason then says which (ReasonDuplicate,
	// ReasonRateLimited).
	Counted   bool
	ViewCount uint64
	Reason    string
	// Region and Endpoint answered the call (on error: the last one tried).
	Region, Endpoint string
	// Attempts is the number of requests sent, the first included.
	Attempts int
	// FailedOver is set when the answer came from another endpoint than the
	// first one tried.
	FailedOver bool
}

// RecordView records a view of videoID by userID: POST /videos/{id}/views.
// A zero ts leaves the timestamp out (the server's clock decides anyway; see
// the README). On error the result still carries Region, Endpoint, Attempts
// and FailedOver; a final 4xx answer is an *APIError.
func (c *Client) RecordView(ctx context.Context, videoID, userID string, ts time.Time) (ViewResult, error) {
	req := struct {
		UserID    string `json:"userId"`
		Timestamp int64  `json:"timestamp,omitempty"`
	}{UserID: userID}
	if !ts.IsZero() {
		req.Timestamp = ts.UnixMilli()
	}
	body, err := json.Marshal(req)
	if err != nil {
		return ViewResult{}, err
	}
	var res ViewResult
	s, err := c.do(ctx, http.MethodPost, videoPath(videoID), body, func(data []byte) error {
		var out struct {
			VideoID   string  `json:"videoId"`
			Counted   *bool   `json:"counted"`
			ViewCount *uint64 `json:"viewCount"`
			Reason    string  `json:"reason"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return err
		}
		if out.Counted == nil || out.ViewCount == nil {
			return errors.New(`no "counted" or "viewCount"`)
		}
		res = ViewResult{VideoID: out.VideoID, Counted: *out.Counted, ViewCount: *out.ViewCount, Reason: out.Reason}
		return nil
	})
	if res.VideoID == "" {
		res.VideoID = videoID
	}
	res.Region, res.Endpoint, res.Attempts, res.FailedOver = s.Region, s.Endpoint, s.Attempts, s.FailedOver
	return res, err
}

// Event is one view of a RecordViews batch. A zero Timestamp is left out.
type Event struct {
	VideoID   string
	UserID    string
	Timestamp time.Time
}

// NotCounted is an event of a batch that was not counted: a duplicate, rate
// limited, or rejected as invalid (Reason is then the input error code, e.g.
// "invalid_video_id", and Message explains it).
type NotCounted struct {
	Index   int
	VideoID string
	Reason  string
	Message string
}

// BatchResult is the answer to RecordViews.
type BatchResult struct {
	// Received is the number of events in the batch; Counted how many were
	// counted; Rejected how many were invalid. NotCounted lists every event
	// not counted (rejected ones included), by increasing Index.
	Received, Counted, Rejected int
	NotCounted                  []NotCounted
	// Region, Endpoint, Attempts and FailedOver as in ViewResult. After a
	// failover the figures are those of the attempt that was answered: events
	// an earlier, unanswered attempt counted come back as duplicates.
	Region, Endpoint string
	Attempts         int
	FailedOver       bool
}

// RecordViews records a batch of views: POST /v1/events. The API accepts at
// most MaxBatchEvents events per call (more is answered 413
// too_many_events). Invalid events do not fail the call: they are reported
// in NotCounted and the others are counted.
func (c *Client) RecordViews(ctx context.Context, events []Event) (BatchResult, error) {
	type event struct {
		VideoID   string `json:"videoId"`
		UserID    string `json:"userId"`
		Timestamp int64  `json:"timestamp,omitempty"`
	}
	in := make([]event, len(events))
	for i, e := range events {
		in[i] = event{VideoID: e.VideoID, UserID: e.UserID}
		if !e.Timestamp.IsZero() {
			in[i].Timestamp = e.Timestamp.UnixMilli()
		}
	}
	body, err := json.Marshal(in)
	if err != nil {
		return BatchResult{}, err
	}
	var res BatchResult
	s, err := c.do(ctx, http.MethodPost, "/v1/events", body, func(data []byte) error {
		var out struct {
			Received   *int `json:"received"`
			Counted    *int `json:"counted"`
			Rejected   int  `json:"rejected"`
			NotCounted []struct {
				Index   int    `json:"index"`
				VideoID string `json:"videoId"`
				Reason  string `json:"reason"`
				Message string `json:"message"`
			} `json:"notCounted"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return err
		}
		if out.Received == nil || out.Counted == nil {
			return errors.New(`no "received" or "counted"`)
		}
		if *out.Received != len(events) || *out.Counted+len(out.NotCounted) != len(events) {
			return fmt.Errorf("received %d, counted %d, not counted %d for a batch of %d", *out.Received, *out.Counted, len(out.NotCounted), len(events))
		}
		res = BatchResult{Received: *out.Received, Counted: *out.Counted, Rejected: out.Rejected, NotCounted: make([]NotCounted, len(out.NotCounted))}
		for i, nc := range out.NotCounted {
			if nc.Index < 0 || nc.Index >= len(events) {
				return fmt.Errorf("not-counted index %d out of range", nc.Index)
			}
			res.NotCounted[i] = NotCounted{Index: nc.Index, VideoID: nc.VideoID, Reason: nc.Reason, Message: nc.Message}
		}
		return nil
	})
	res.Region, res.Endpoint, res.Attempts, res.FailedOver = s.Region, s.Endpoint, s.Attempts, s.FailedOver
	return res, err
}

// Count is the answer to Views.
type Count struct {
	VideoID   string
	ViewCount uint64
	// LastUpdated is when the count last changed, nil if never viewed.
	LastUpdated *time.Time
	// Regions splits ViewCount by the region that counted each view; only
	// nodes that replicate send it (nil otherwise).
	Regions map[string]uint64
	// Region, Endpoint, Attempts and FailedOver as in ViewResult.
	Region, Endpoint string
	Attempts         int
	FailedOver       bool
}

// Views reads the count of videoID: GET /videos/{id}/views. Each region
// answers from its own durable state, so after a failover the count may lag
// what another region already counted, until replication catches up.
func (c *Client) Views(ctx context.Context, videoID string) (Count, error) {
	var res Count
	s, err := c.do(ctx, http.MethodGet, videoPath(videoID), nil, func(data []byte) error {
		var out struct {
			VideoID     string            `json:"videoId"`
			ViewCount   *uint64           `json:"viewCount"`
			LastUpdated *string           `json:"lastUpdated"`
			Regions     map[string]uint64 `json:"regions"`
		}
		if err := json.Unmarshal(data, &out); err != nil {
			return err
		}
		if out.ViewCount == nil {
			return errors.New(`no "viewCount"`)
		}
		res = Count{VideoID: out.VideoID, ViewCount: *out.ViewCount, Regions: out.Regions}
		if out.LastUpdated != nil {
			t, err := time.Parse(time.RFC3339Nano, *out.LastUpdated)
			if err != nil {
				return fmt.Errorf("lastUpdated: %w", err)
			}
			res.LastUpdated = &t
		}
		return nil
	})
	if res.VideoID == "" {
		res.VideoID = videoID
	}
	res.Region, res.Endpoint, res.Attempts, res.FailedOver = s.Region, s.Endpoint, s.Attempts, s.FailedOver
	return res, err
}

func videoPath(videoID string) string {
	return "/videos/" + url.PathEscape(videoID) + "/views"
}
