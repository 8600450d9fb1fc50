// Package crdt holds tally's conflict-free replicated data types: G-Counters and
// PN-Counters over per-replica slots.
//
// Every type here is a plain value with no I/O, clock or randomness: callers pass
// the current time in. Merge of two states is the per-slot maximum of each field,
// which makes it commutative (a⊔b = b⊔a), associative ((a⊔b)⊔c = a⊔(b⊔c)) and
// idempotent (a⊔a = a), and makes every state only grow (a ⊑ a⊔b). Replicas that
// have seen the same set of states therefore hold the same value, whatever order
// the states arrived in and however often they were delivered.
//
// Values are not safe for concurrent use; callers serialise access.
package crdt
