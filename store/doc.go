// Package store keeps tally's durable state in Badger and writes it through a
// group committer.
//
// # Key schema
//
// Every key starts with one byte naming its kind. Video, user and event IDs are
// validated upstream to 1–128 bytes of [A-Za-z0-9_.:-], so a 0x00 byte can
// separate them unambiguously.
//
//	'm' name                                   node metadata (see below)
//	'c' video 0x00 event                       counter state: crdt.PNCounter, msgpack
//	'd' video 0x00 user 0x00 window(u64 BE)    dedup claim set: crdt.Claims as a PNCounter,
//	                                           msgpack (16 bytes replica, ingestMs in format 1);
//	                                           TTL = end of window + lag budget
//	'b' window(u64 BE) replica(u64 BE) seq(u64 BE)
//	                                           claim block: claims one replica won, each alone
//	                                           in its set, in one window during one group
//	                                           commit (ClaimBlock); TTL = as their claim sets.
//	                                           Written only when the event log does not outlive
//	                                           claims: otherwise a counted event ('e') is the
//	                                           record of the claim it won
//	'l' seq(u64 BE)                             counter log: the counter states of one group
//	                                           commit, many per record (CounterLog; a state
//	                                           may refer to the video, event and state of an
//	                                           earlier one), each a
//	                                           newer state of its 'c' entry until checkpointed
//	                                           there; merged into the 'c' entries at start
//	                                           (ReplayCounterLog)
//	'e' ingestMs(u64 BE) replica(u64 BE) seq(u64 BE)
//	                                           raw event log: one Event, msgpack, or an
//	                                           event block (EventBlock, first byte 0xeb):
//	                                           the events of one ingest call, or of the single
//	                                           views of one group commit and millisecond;
//	                                           TTL = retention
//
// Metadata keys:
//
//	"m" "replica"   the current replica ID (u64 BE)
//	"m" "dirty"     present while a node runs with async durability; found at
//	                start, it means the last async run did not shut down cleanly
//	                and may have acknowledged writes it never persisted
//	"m" "retired"   the replica IDs given up after unclean shutdowns, oldest
//	                first (u64 BE each); their claims are still here
//	"m" "format"    schema version (u64 BE, now 6); a newer one is refused
//	"m" "sketchmark" ingest ms (u64 BE) from which counted views of the raw
//	                event log are replayed into the unique-viewer sketches at
//	                start: chunks grown by local views are written at
//	                checkpoints, not with every batch
//	"m" "claimhigh" written by format 1 only; ignored (claims of live windows
//	                are all loaded at start now)
//
// # Durability
//
// Writers hand mutations to a Committer, which gathers everything submitted
// while the previous batch was being written into one Badger write, fsynced
// (Badger syncs each write request to the log of the memtable it went into,
// so a batch split across a memtable rotation is durable too), then releases
// the waiters of that batch together. Counter states
// are not written per increment: the committer asks its Prepare hook for the
// current state of every key changed since the last batch (coalesced
// persistence), so a hot key costs one write per batch, not per view.
//
// A Store and a Committer are safe for concurrent use.
package store
