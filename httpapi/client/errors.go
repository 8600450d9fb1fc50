package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Error codes of the API (see httpapi/errors.go) a caller may test APIError.Code against.
const (
	CodeMalformedJSON        = "malformed_json"
	CodeInvalidVideoID       = "invalid_video_id"
	CodeInvalidUserID        = "invalid_user_id"
	CodeInvalidTimestamp     = "invalid_timestamp"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeBodyTooLarge         = "body_too_large"
	CodeTooManyEvents        = "too_many_events"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeOverloaded           = "overloaded"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
)

// Reasons a view is not counted, in ViewResult.Reason and NotCounted.Reason
// (the latter also carries input error codes for rejected batch events).
const (
	ReasonDuplicate   = "duplicate"
	ReasonRateLimited = "rate_limited"
)

// ErrNoEndpoint is returned (wrapped) when no endpoint may be tried: every
// circuit breaker is open, or a half-open one already has its trial in flight.
var ErrNoEndpoint = errors.New("tally client: no endpoint available (circuit breakers open)")

// ErrBadResponse is returned (wrapped) when a 2xx answer's body is not what
// the API sends (or is over the size limit); the client retries such an
// answer like a 5xx.
var ErrBadResponse = errors.New("bad response")

// APIError is a non-2xx answer of the API. Code is the stable error code of
// the body ({"error": {"code", "message"}}), empty when the body was not in
// that shape (a proxy's answer, say); Message is then the status text and the
// start of the body.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the parsed Retry-After header (uncapped), 0 if absent.
	RetryAfter time.Duration
	// Region and Endpoint name who answered.
	Region   string
	Endpoint string
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = http.StatusText(e.Status)
	}
	return fmt.Sprintf("tally: %d %s: %s (%s, region %s)", e.Status, code, e.Message, e.Endpoint, e.Region)
}

// Temporary reports whether the error is one the client retries on another
// endpoint: 429 and every 5xx.
func (e *APIError) Temporary() bool { return retryableStatus(e.Status) }

func retryableStatus(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// parseRetryAfter reads a Retry-After value: delay seconds or an HTTP date
// (relative to now). ok is false for an absent or unreadable value.
func parseRetryAfter(v string, now time.Time) (d time.Duration, ok bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > int64(24*time.Hour/time.Second) {
			secs = int64(24 * time.Hour / time.Second) // far beyond any cap; avoids overflow
		}
		return time.Duration(secs) * time.Second, true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return max(t.Sub(now), 0), true
}
