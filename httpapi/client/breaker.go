package client

import "time"

// BreakerState is the state of an endpoint's circuit breaker.
type BreakerState int

const (
	// BreakerClosed lets every request through.
	BreakerClosed BreakerState = iota
	// BreakerOpen lets no request through until the cooldown has passed.
	BreakerOpen
	// BreakerHalfOpen lets one trial request through; its outcome closes or
	// reopens the breaker.
	BreakerHalfOpen
)

func (s BreakerState) String() string {
	switch s {
	case BreakerClosed:
		return "closed"
	case BreakerOpen:
		return "open"
	case BreakerHalfOpen:
		return "half-open"
	}
	return "unknown"
}

// breaker is a consecutive-failure circuit breaker. It is not safe for
// concurrent use: the Client guards it with its mutex. Every state change
// starts a new generation; the outcome of a request that was let through in an
// older generation is counted in no transition (a slow success from before the
// breaker opened does not close it).
type breaker struct {
	threshold int           // consecutive failures that open it
	cooldown  time.Duration // how long it stays open

	state       BreakerState
	gen         uint64
	consecutive int // consecutive failures in the current closed period
	openedAt    time.Time
	trial       bool // half-open: the trial request is in flight
}

// effective returns the state as the next request would see it: an open
// breaker whose cooldown has passed is half-open.
func (b *breaker) effective(now time.Time) BreakerState {
	if b.state == BreakerOpen && !now.Before(b.openedAt.Add(b.cooldown)) {
		return BreakerHalfOpen
	}
	return b.state
}

// available reports whether a request may go through now.
func (b *breaker) available(now time.Time) bool {
	switch b.effective(now) {
	case BreakerClosed:
		return true
	case BreakerHalfOpen:
		return b.state == BreakerOpen || !b.trial // an open one turning half-open has no trial yet
	}
	return false
}

// acquire lets one request through (available must be true) and returns its
// generation and whether it is the half-open trial.
func (b *breaker) acquire(now time.Time) (gen uint64, trial bool) {
	if b.state == BreakerOpen && b.effective(now) == BreakerHalfOpen {
		b.state = BreakerHalfOpen
		b.trial = false
		b.gen++
	}
	if b.state == BreakerHalfOpen {
		b.trial = true
		return b.gen, true
	}
	return b.gen, false
}

// success records a request that got an answer from the endpoint.
func (b *breaker) success(gen uint64) {
	if gen != b.gen {
		return
	}
	switch b.state {
	case BreakerClosed:
		b.consecutive = 0
	case BreakerHalfOpen:
		b.state, b.consecutive, b.trial = BreakerClosed, 0, false
		b.gen++
	}
}

// failure records a failed request at now.
func (b *breaker) failure(gen uint64, now time.Time) {
	if gen != b.gen {
		return
	}
	switch b.state {
	case BreakerClosed:
		b.consecutive++
		if b.consecutive >= b.threshold {
			b.state, b.openedAt = BreakerOpen, now
			b.gen++
		}
	case BreakerHalfOpen:
		b.consecutive++
		b.state, b.openedAt, b.trial = BreakerOpen, now, false
		b.gen++
	}
}

// abandon records a request whose outcome says nothing about the endpoint
// (the caller cancelled it): a trial slot is freed for the next request.
func (b *breaker) abandon(gen uint64, trial bool) {
	if trial && gen == b.gen && b.state == BreakerHalfOpen {
		b.trial = false
	}
}
