// Package httpapi serves a tally node over HTTP with echo: the seed API
// (POST and GET /videos/{id}/views), batch ingest (POST /v1/events), health,
// readiness and Prometheus metrics.
//
// Every error is JSON, {"error": {"code": "...", "message": "..."}}, with a
// stable code and the fitting status: 400 bad input, 404 unknown route, 405
// wrong method, 413 body too large, 415 not JSON, 503 overloaded or not ready
// (with Retry-After). Nothing is counted for a request that errs.
package httpapi
