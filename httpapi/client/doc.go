// Package client is a Go client for tally's HTTP API that spreads calls over
// the endpoints of several regions and fails over between them.
//
// A Client knows a list of regions, each a group of endpoints (base URLs of
// tally nodes). It measures the round-trip time to every endpoint with
// GET /healthz (Probe once, or Start to probe periodically) and sends each call
// to the healthy endpoint with the lowest RTT whose circuit breaker lets
// requests through; ties, and endpoints not measured yet, go by the order of
// the configuration (regions in order, then endpoints in order).
//
// A call that fails with a transport error, a per-attempt timeout, a 5xx or a
// 429 counts as a failure on that endpoint's breaker, backs off (exponential,
// full jitter, drawn from Config.Rand) and is sent again to the next best
// endpoint: one not tried yet by this call, preferably in a region where this
// call has not failed. A Retry-After header (capped by Config.MaxRetryAfter)
// keeps the endpoint that sent it out of the choice until it elapses, and is
// waited for when that endpoint is the only one left. Any other 4xx is
// returned at once as an *APIError, never retried.
//
// Resending a view is safe: the server counts a (video, user) pair once per
// dedup window across all regions, so a view whose answer was lost in one
// region and that is sent again to another comes back counted:false, reason
// "duplicate". ViewResult, BatchResult and Count report the region and
// endpoint that answered, the number of attempts and whether the call failed
// over; Stats counts failovers over the client's life.
//
// Each endpoint has a circuit breaker: closed until Config.BreakerFailures
// consecutive failures, then open (skipped) for Config.BreakerCooldown, then
// half-open: exactly one trial request goes through; success closes the
// breaker, failure opens it for another cooldown. When every breaker is open a
// call fails at once with ErrNoEndpoint. Endpoints returns a snapshot of every
// endpoint (RTT, health, breaker state, failures) for metrics.
//
// A Client is safe for concurrent use.
package client
