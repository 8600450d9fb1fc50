// Package httpapi serves a tally node over HTTP with echo: the seed API
// (POST and GET /videos/{id}/views), batch ingest of every event type (POST
// /v1/events), likes (POST /v1/likes, DELETE and GET /v1/likes/{id}), time
// series (GET /v1/videos/{id}/counts), unique viewers (GET
// /v1/videos/{id}/unique-viewers), trending (GET /v1/top), status,
// health, readiness, Prometheus metrics, a live dashboard (GET /, its data
// at GET /v1/dashboard) whose files are embedded in the binary, and admin
// routes: the raw event log (GET /v1/audit/events, streamed NDJSON), the
// gossip keyring (/v1/admin/gossip-keys) and the Go runtime's profiles
// (/debug/pprof/).
//
// Every error is JSON, {"error": {"code": "...", "message": "..."}}, with a
// stable code and the fitting status: 400 bad input, 401 admin route
// without the admin bearer token, 403 admin API off, 404 unknown route, 405
// wrong method, 413 body too large, 415 not JSON, 429 too many requests in
// flight from one client, 503 overloaded or not ready (429 and 503 with
// Retry-After). Nothing is counted for a request that errs.
//
// Request bodies are untrusted: they are size-bounded before and while they
// are read, and decoded by functions that are fuzzed (decode.go; the fast
// path of batch bodies, batchdecode.go, against encoding/json). Ingest
// requests are admitted against in-flight bounds before their body is read
// (shed.go), the listener bounds connections and has read, write and idle
// timeouts, so memory stays bounded under overload and slow clients.
//
// Every request gets an ID (X-Request-Id, the client's if usable), which the
// request's log lines carry as request_id.
//
// Readiness (GET /readyz, the tally_ready gauge): ready once the node's state
// is loaded and, if it replicates, it has synced with one peer or is alone;
// it stays ready until a write fails to persist or shutdown starts.
package httpapi
