// Package httpapi serves a tally node over HTTP with echo: the seed API
// (POST and GET /videos/{id}/views), batch ingest (POST /v1/events), status,
// health, readiness, Prometheus metrics, and a live dashboard (GET /, its data
// at GET /v1/dashboard) whose files are embedded in the binary.
//
// Every error is JSON, {"error": {"code": "...", "message": "..."}}, with a
// stable code and the fitting status: 400 bad input, 404 unknown route, 405
// wrong method, 413 body too large, 415 not JSON, 503 overloaded or not ready
// (with Retry-After). Nothing is counted for a request that errs.
//
// Every request gets an ID (X-Request-Id, the client's if usable), which the
// request's log lines carry as request_id.
//
// Readiness (GET /readyz, the tally_ready gauge): ready once the node's state
// is loaded and, if it replicates, it has synced with one peer or is alone;
// it stays ready until a write fails to persist or shutdown starts.
package httpapi
