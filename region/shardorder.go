package region

import "unsafe"

// shardOrder appends to dst the indexes 0..n-1 ordered by shard(i), a
// number below shards, keeping the order of indexes of one shard (a
// counting sort), and returns it with the end of each shard's run in ends
// (len(ends) == shards; ends[s-1] is where shard s's run starts).
//
// A large ingest call takes each shard's lock once for all of its keys
// (claimTable.claimMany, keyedLimiter.allowMany) instead of once per key,
// and while holding it, first reads the table entry of every key of the
// shard, then decides them: the reads of the first loop do not depend on
// each other, so the processor has many of them in flight at once, where
// one key at a time waited on each trip to memory in turn (issue 9).
func shardOrder(dst []int32, ends []int32, n int, shard func(i int) int) []int32 {
	clear(ends)
	for i := 0; i < n; i++ {
		ends[shard(i)]++
	}
	var sum int32
	for s, c := range ends {
		ends[s] = sum // the start, for now
		sum += c
	}
	dst = append(dst[:0], make([]int32, n)...)
	for i := 0; i < n; i++ {
		s := shard(i)
		dst[ends[s]] = int32(i)
		ends[s]++
	}
	return dst
}

// eachRun calls fn with each shard that has indexes in order, as
// shardOrder left them with ends, and the run of its indexes, in order of
// shards.
func eachRun(order, ends []int32, fn func(shard int, run []int32)) {
	start := int32(0)
	for s, end := range ends {
		if end > start {
			fn(s, order[start:end])
		}
		start = end
	}
}

// prefault writes the zero value over one element of s in every page of
// its memory, so that a large table of zeros (made by make, fresh from the
// system) gets pages of its own now. Left alone, such a page is first read
// (a probe, or a touch ahead of one) as the kernel's shared page of zeros,
// and the first write to it then takes a second page fault, to copy it, and
// a flush of the old mapping from the other processor's TLB (an
// interprocessor interrupt, slow in a virtual machine): 3% of a durable
// tally serve's CPU under a hot batch load (perf; issue 9).
func prefault[T any](s []T) {
	var zero T
	step := max(1, 4096/int(unsafe.Sizeof(zero)))
	for i := 0; i < len(s); i += step {
		s[i] = zero
	}
}
