// Package loadgen is tally's closed-loop HTTP load generator, the yardstick for
// every benchmark in the project.
//
// Run starts Config.Connections workers. Each worker owns one keep-alive
// connection's worth of the shared http.Transport and sends one request at a
// time: it builds the next request, sends it, reads the whole response, records
// the outcome and only then sends the next one (closed loop). The offered load
// therefore adapts to the server; throughput is what the server sustains at that
// concurrency.
//
// A run always ends: at Config.Count requests (claimed exactly, across all
// workers) or at Config.Duration (no new request is started after it; requests in
// flight finish, each bounded by Config.Timeout), whichever comes first. Duration
// is always set — it defaults to 10s and may not exceed 10 minutes — so even a
// run with a Count has a time cap. Cancelling the context aborts requests in
// flight; those are not counted anywhere.
//
// # Through the client
//
// With Config.Regions set, the workers send through an httpapi/client Client
// instead of their own lean HTTP path: it measures every endpoint's round trip
// (once before the run, then every 2s), sends each call to the nearest healthy
// endpoint, and fails over with retries, backoff and per-endpoint circuit
// breakers. A request is then one client call: its latency covers every
// attempt, and it fails only if the client gave up (error kinds as below, plus
// "no_endpoint" when every breaker is open). Result.ViaClient, Attempts,
// Failovers and AnsweredBy report what the client did. One Target without
// Regions keeps the lean path, so the single-node benchmark measures the server
// and not the client.
//
// # What is sent
//
// Video IDs are "v0".."v<Videos-1>", chosen uniformly at random, except that a
// fraction HotVideoFraction of requests goes to the single video "hot". User IDs
// are "u0".."u<Users-1>". A fresh view takes the next user in a round-robin over
// all users (the workers interleave, and the start offset depends on Seed), so
// load is spread as evenly as possible over users and the server's per-user rate
// limit is not what gets measured; as long as fewer than Users fresh views have
// been sent, every fresh (video, user) pair is distinct and should be counted. A
// fraction RepeatFraction of views instead resends a (video, user) pair this
// worker already had acknowledged (counted, or rejected as a duplicate), so it
// should come back counted:false with reason "duplicate". Timestamps are the
// current Unix time in milliseconds. Randomness comes from math/rand/v2 PCG
// generators seeded with (Seed, worker index); there is no global generator. Use
// a different Seed for runs against the same data on the same day if their
// fresh views must not collide.
//
// # What is reported
//
// Requests counts completed requests: those that got a response or failed with a
// transport error or timeout. A request succeeds if it gets status 200 and a
// well-formed body; anything else is an error, classified by kind ("http_503",
// "timeout", "transport", "bad_response"). Views sent counts the view events in
// completed requests (1 per view request, BatchSize per batch request); counted
// and not-counted come from the bodies of successful responses (for batches, the
// "counted" field and the "notCounted" list). Rates divide by the elapsed wall
// time from start until the last worker stopped; views/s counts the views the
// server acknowledged (counted + not counted).
//
// Latency is measured for every completed request, successful or not, from just
// before the request is handed to the client until its response body has been
// read to the end. Each worker records it in a log-linear histogram (128
// sub-buckets per power of two of nanoseconds); percentiles use the nearest-rank
// definition (the smallest recorded latency such that at least q of all
// latencies are ≤ it) and report the upper edge of the bucket holding it,
// clamped to the maximum. A reported percentile is therefore never below the
// true one and at most 1/128 (0.78%) above it. Min, max and mean are exact.
package loadgen
