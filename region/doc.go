// Package region is one tally node: the ingest path (validate, rate limit,
// dedup, apply, group commit, ack), the read path (from memory, Badger on a
// miss) and the wiring of store and crdt.
//
// # Ingest
//
// A view is validated, checked against per-user (and optionally per-IP) token
// buckets, and deduplicated on (video, user, window), where the window is the
// ingesting node's clock divided into DedupWindow-long spans aligned to the
// Unix epoch (so 24 h windows are UTC days); the client's timestamp is kept in
// the raw event log but never trusted for windows. A counted view increments
// this replica's P slot in memory (lock-free: an atomic add folded into the
// state at the batch cut), and its claim and raw event are handed to the
// group committer. With sync durability the call returns only after the batch
// holding them is fsynced; the counter state itself is written coalesced, once
// per batch, however many views a hot key took. The raw events of one call
// are one event block (those of single views share a block per batch and
// millisecond: sharedEvents; store.EventBlock): a batch costs a few Badger
// entries per video, not several per view. A claim won here is not written
// apart: its counted event is its record, read back into the claim table at
// start (forEachStoredClaim), unless the event log is set to keep events for
// less than a claim lives; then the claims won alone in one batch go into a
// claim block per window (store.ClaimBlock). Counted events are also the
// record of the unique-viewer registers their views raised until a
// checkpoint writes the chunks (uniqueTable; replaySketches at start).
//
// # Maintenance
//
// A node not driven by the simulator deletes expired raw events and claim
// blocks every minute (startSweeps, store.Sweeper), runs value-log GC, and
// cuts batches when idle while a unique-viewer checkpoint is due.
//
// # Reads
//
// Reads are served from memory and see only durable state: a count shown to a
// user never goes backwards after a crash. Counters not in memory are loaded
// from Badger on first use, so a restart needs no rebuild pass.
//
// A Node is safe for concurrent use.
package region
