package httpapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// Error codes the API answers with, beside the region.Code* input codes.
const (
	CodeMalformedJSON        = "malformed_json"
	CodeUnsupportedMediaType = "unsupported_media_type"
	CodeBodyTooLarge         = "body_too_large"
	CodeTooManyEvents        = "too_many_events"
	CodeNotFound             = "not_found"
	CodeMethodNotAllowed     = "method_not_allowed"
	CodeOverloaded           = "overloaded"
	CodeUnavailable          = "unavailable"
	CodeInternal             = "internal"
	// CodeInvalidTime: a from or to query parameter that is neither unix
	// milliseconds nor an RFC 3339 time between 1970 and 9999.
	CodeInvalidTime = "invalid_time"
)

// apiError is an error with its HTTP status and stable code.
type apiError struct {
	Status  int
	Code    string
	Message string
}

func (e *apiError) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

func errf(status int, code, format string, a ...any) *apiError {
	return &apiError{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

// errorBody is the JSON shape of every error answer.
type errorBody struct {
	Error struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// classify maps any error a handler returns to an apiError.
func classify(err error) *apiError {
	var ae *apiError
	var ie *region.InputError
	var he *echo.HTTPError
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &ie):
		return errf(http.StatusBadRequest, ie.Code, "%s", ie.Message)
	case errors.Is(err, region.ErrOverloaded):
		return errf(http.StatusServiceUnavailable, CodeOverloaded, "the node is over capacity; retry after a moment")
	case errors.Is(err, region.ErrClosed):
		return errf(http.StatusServiceUnavailable, CodeUnavailable, "the node is shutting down")
	case errors.Is(err, region.ErrUnavailable):
		return errf(http.StatusServiceUnavailable, CodeUnavailable, "the node cannot persist writes: %v", err)
	case errors.As(err, &he):
		switch he.Code {
		case http.StatusNotFound:
			return errf(he.Code, CodeNotFound, "no such route")
		case http.StatusMethodNotAllowed:
			return errf(he.Code, CodeMethodNotAllowed, "method not allowed on this route")
		case http.StatusRequestEntityTooLarge:
			return errf(he.Code, CodeBodyTooLarge, "request body too large")
		case http.StatusUnsupportedMediaType:
			return errf(he.Code, CodeUnsupportedMediaType, "%v", he.Message)
		}
		return errf(he.Code, http.StatusText(he.Code), "%v", he.Message)
	}
	return errf(http.StatusInternalServerError, CodeInternal, "%v", err)
}

// handleError is echo's HTTPErrorHandler: every error becomes a JSON body.
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	ae := classify(err)
	log := requestLogger(c, s.log)
	if ae.Status >= 500 {
		log.Error("request failed", "method", c.Request().Method, "path", c.Request().URL.Path, "status", ae.Status, "err", err)
	}
	if errors.Is(err, region.ErrOverloaded) {
		s.metrics.shed.WithLabelValues(shedCommitQueue).Inc()
	}
	if ae.Status == http.StatusServiceUnavailable || ae.Status == http.StatusTooManyRequests {
		c.Response().Header().Set("Retry-After", "1")
	}
	var body errorBody
	body.Error.Code, body.Error.Message = ae.Code, ae.Message
	if err := c.JSON(ae.Status, body); err != nil {
		log.Warn("write error response", "err", err)
	}
}
