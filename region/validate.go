package region

import (
	"errors"
	"fmt"
)

// MaxIDLen is the longest video, user or event ID accepted, in bytes.
const MaxIDLen = 128

// InputError is a request the node refuses because of what it says; nothing
// was counted. Code is stable and machine-readable.
type InputError struct {
	Code    string // e.g. "invalid_video_id"
	Message string
}

func (e *InputError) Error() string { return e.Code + ": " + e.Message }

// Input error codes.
const (
	CodeInvalidVideoID   = "invalid_video_id"
	CodeInvalidUserID    = "invalid_user_id"
	CodeInvalidTimestamp = "invalid_timestamp"
	CodeInvalidEvent     = "invalid_event"
)

// Sentinel errors of the node.
var (
	// ErrOverloaded: the commit queue is full; retry later (HTTP 503).
	ErrOverloaded = errors.New("region: overloaded")
	// ErrClosed: the node is shutting down.
	ErrClosed = errors.New("region: node closed")
	// ErrUnavailable: the node could not persist a write (disk failure); it
	// reports itself not ready until restarted.
	ErrUnavailable = errors.New("region: storage unavailable")
)

func inputErr(code, format string, a ...any) *InputError {
	return &InputError{Code: code, Message: fmt.Sprintf(format, a...)}
}

// validEvent reports whether s can name an event type.
func validEvent(s string) bool { return len(s) <= MaxEventLen && validID(s) }

// validID reports whether s is 1–128 bytes of [A-Za-z0-9_.:-].
func validID(s string) bool {
	if len(s) == 0 || len(s) > MaxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return false
		}
	}
	return true
}

// CheckID returns an InputError with code if s is not a valid ID.
func CheckID(code, what, s string) error {
	if validID(s) {
		return nil
	}
	if len(s) == 0 {
		return inputErr(code, "%s is missing or empty", what)
	}
	if len(s) > MaxIDLen {
		return inputErr(code, "%s is %d bytes long; at most %d allowed", what, len(s), MaxIDLen)
	}
	return inputErr(code, "%s %q has characters outside [A-Za-z0-9_.:-]", what, s)
}
