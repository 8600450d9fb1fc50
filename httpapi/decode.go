package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/tallyhq/tally/region"
)

// The decoders below read request bodies, which are untrusted bytes. Each
// bounds what it allocates by the body it is given (itself bounded by
// readJSONBody) and answers bad input with an *apiError or *region.InputError
// carrying a stable code, never a panic. FuzzDecodeViewBody and
// FuzzDecodeEventsBody hold them to that; FuzzDecodeViewFast and
// FuzzDecodeEventsFast hold the fast paths (batchdecode.go) to
// encoding/json's answers.

// readJSONBody checks the content type and reads at most limit bytes.
func readJSONBody(c echo.Context, limit int64) ([]byte, error) {
	req := c.Request()
	ct := req.Header.Get(echo.HeaderContentType)
	if !jsonMediaType(ct) {
		return nil, errf(http.StatusUnsupportedMediaType, CodeUnsupportedMediaType, "Content-Type %q: want application/json", ct)
	}
	if req.ContentLength > limit {
		return nil, errf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body of %d bytes; at most %d allowed", req.ContentLength, limit)
	}
	body, err := readBody(c, limit)
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			return nil, errf(http.StatusRequestEntityTooLarge, CodeBodyTooLarge, "body larger than %d bytes", limit)
		}
		return nil, errf(http.StatusBadRequest, CodeMalformedJSON, "read body: %v", err)
	}
	return body, nil
}

// jsonMediaType reports whether the Content-Type ct is JSON: application/json
// or a +json type, with any parameters. The type clients send is answered
// without mime.ParseMediaType, which allocates a map of parameters.
func jsonMediaType(ct string) bool {
	if ct == "application/json" {
		return true
	}
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// readBody reads the request's body, refusing one over limit bytes with an
// *http.MaxBytesError. A body of unknown length is read through
// http.MaxBytesReader, which also has net/http close the connection once
// the answer is written. A body of announced length (at most limit: the
// caller checked) cannot be longer as net/http reads it: it is read into one
// buffer of its size, instead of io.ReadAll's 512 bytes grown as it fills,
// and still held to limit for a request made in process.
func readBody(c echo.Context, limit int64) ([]byte, error) {
	req := c.Request()
	length := req.ContentLength
	if length < 0 || length > limit {
		return io.ReadAll(http.MaxBytesReader(c.Response(), req.Body, limit))
	}
	// One byte more than announced, so that the read that finds the end
	// has room and no copy is made.
	b := make([]byte, 0, length+1)
	for {
		n, err := req.Body.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if int64(len(b)) > limit {
			return nil, &http.MaxBytesError{Limit: limit}
		}
		if err != nil {
			if err == io.EOF { //nolint:errorlint // as io.ReadAll: the reader's own end
				err = nil
			}
			return b, err
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)] // longer than announced: grow as io.ReadAll
		}
	}
}

// decodeViewBody decodes the body of POST /videos/{id}/views: the user (not
// yet validated: the node does that) and the client's timestamp in unix ms (0
// if it sent none).
//
// The bodies clients send take the fast path (decodeViewFast); every other
// body, valid or not, is decoded by decodeViewJSON, which also gives every
// error.
func decodeViewBody(body []byte) (user string, clientMs int64, err error) {
	user, raw, ok := decodeViewFast(body)
	if !ok {
		return decodeViewJSON(body)
	}
	ts, err := parseTimestamp(raw)
	if err != nil {
		return "", 0, err
	}
	return user, ts, nil
}

// decodeViewJSON is decodeViewBody by encoding/json: the reference for
// every body.
func decodeViewJSON(body []byte) (user string, clientMs int64, err error) {
	var req viewRequest
	if err := decodeStrict(body, &req); err != nil {
		return "", 0, err
	}
	if req.UserID == nil {
		return "", 0, &region.InputError{Code: region.CodeInvalidUserID, Message: "userId is missing"}
	}
	ts, err := parseTimestamp(req.Timestamp)
	if err != nil {
		return "", 0, err
	}
	return *req.UserID, ts, nil
}

// likeRequest is the body of POST /v1/likes.
type likeRequest struct {
	VideoID   *string         `json:"videoId"`
	UserID    *string         `json:"userId"`
	Timestamp json.RawMessage `json:"timestamp"`
}

// decodeLikeBody decodes the body of POST /v1/likes: the video and user (not
// yet validated: the node does that) and the client's timestamp in unix ms
// (0 if it sent none).
func decodeLikeBody(body []byte) (video, user string, clientMs int64, err error) {
	var req likeRequest
	if err := decodeStrict(body, &req); err != nil {
		return "", "", 0, err
	}
	if req.VideoID == nil {
		return "", "", 0, &region.InputError{Code: region.CodeInvalidVideoID, Message: "videoId is missing"}
	}
	if req.UserID == nil {
		return "", "", 0, &region.InputError{Code: region.CodeInvalidUserID, Message: "userId is missing"}
	}
	ts, err := parseTimestamp(req.Timestamp)
	if err != nil {
		return "", "", 0, err
	}
	return *req.VideoID, *req.UserID, ts, nil
}

// decodeEventsBody decodes the body of POST /v1/events: a JSON array of at
// most MaxBatchEvents events. The bodies clients usually send take the fast
// path (decodeEventsFast); every other body, valid or not, is decoded by
// decodeEventsJSON, which also gives every error.
func decodeEventsBody(body []byte) ([]batchEvent, error) {
	if events, ok := decodeEventsFast(body); ok {
		return events, nil
	}
	return decodeEventsJSON(body)
}

// decodeEventsJSON is decodeEventsBody by encoding/json: the reference for
// every body. It decodes one element at a time and stops at the first one
// over the limit, so a body of tiny elements ("[{},{},...]") cannot make it
// allocate far more than its own size.
func decodeEventsJSON(body []byte) ([]batchEvent, error) {
	malformed := func(err error) error {
		return errf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON body: %v", err)
	}
	if t := bytes.TrimLeft(body, " \t\r\n"); len(t) == 0 || t[0] != '[' {
		return nil, errf(http.StatusBadRequest, CodeMalformedJSON, "body must be a JSON array of events")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil { // the '[' checked above
		return nil, malformed(err)
	}
	events := []batchEvent{}
	for dec.More() {
		if len(events) == MaxBatchEvents {
			return nil, errf(http.StatusRequestEntityTooLarge, CodeTooManyEvents, "more than %d events in one batch; at most %d allowed", MaxBatchEvents, MaxBatchEvents)
		}
		var ev batchEvent
		if err := dec.Decode(&ev); err != nil {
			return nil, malformed(err)
		}
		events = append(events, ev)
	}
	if _, err := dec.Token(); err != nil { // the closing ']'
		return nil, malformed(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errf(http.StatusBadRequest, CodeMalformedJSON, "malformed JSON body: data after the JSON value")
	}
	return events, nil
}

// maxQueryMs bounds the times a query accepts: 9999-12-31T23:59:59.999Z,
// the last instant RFC 3339 can write.
const maxQueryMs = 253_402_300_799_999

// parseQueryTime parses the query parameter name (from, to): unix
// milliseconds or an RFC 3339 time, between 1970 and 9999. A '+' of a zone
// offset that the client did not percent-encode arrives as a space; it is
// read as the '+' it was.
func parseQueryTime(name, s string) (time.Time, error) {
	bad := func(why string) error {
		return errf(http.StatusBadRequest, CodeInvalidTime,
			`%s %s: want unix milliseconds (e.g. 1763787600000) or an RFC 3339 time (e.g. 2026-11-22T05:00:00Z)`, name, why)
	}
	var ms int64
	if v, err := strconv.ParseInt(s, 10, 64); err == nil {
		ms = v
	} else {
		t, err := time.Parse(time.RFC3339Nano, strings.ReplaceAll(s, " ", "+"))
		if err != nil {
			return time.Time{}, bad(quoteShort(s) + " is neither an integer nor RFC 3339")
		}
		ms = t.UnixMilli()
	}
	if ms < 0 || ms > maxQueryMs {
		return time.Time{}, bad(quoteShort(s) + " is before 1970 or after 9999")
	}
	return time.UnixMilli(ms).UTC(), nil
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
