package crdt_test

import (
	"fmt"

	"github.com/tallyhq/tally/crdt"
)

// Two replicas count views independently, then exchange states. Merging in
// either direction gives the same counter.
func ExampleGCounter_Merge() {
	const eu, us crdt.ReplicaID = 1, 2

	var a, b crdt.GCounter
	a.Increment(eu, 3, 1000) // 3 views seen in the EU at t=1000ms
	b.Increment(us, 4, 1005) // 4 views seen in the US at t=1005ms

	ab := a.Clone()
	ab.Merge(b)
	ba := b.Clone()
	ba.Merge(a)

	fmt.Println(ab.Value(), ba.Value(), ab.Equal(ba))
	fmt.Println(ab)
	// Output:
	// 7 7 true
	// {0000000000000001:3@1000 0000000000000002:4@1005}
}

// A PN-Counter also counts down (an unlike); its value never goes below zero.
func ExamplePNCounter() {
	const r crdt.ReplicaID = 1

	var likes crdt.PNCounter
	likes.Increment(r, 5, 1000)
	likes.Decrement(r, 2, 1001)
	fmt.Println(likes.Value())

	likes.Decrement(r, 10, 1002) // more unlikes than likes seen so far
	fmt.Println(likes.Value())
	// Output:
	// 3
	// 0
}

// Delta sends a peer only the slots it is behind on.
func ExampleGCounter_Delta() {
	var local crdt.GCounter
	local.Increment(1, 10, 1000)
	local.Increment(2, 5, 1000)

	peer := local.Clone() // what the peer last acknowledged
	local.Increment(2, 1, 2000)

	d := local.Delta(peer)
	fmt.Println(d)

	peer.Merge(d)
	fmt.Println(peer.Equal(local), peer.Value())
	// Output:
	// {0000000000000002:6@2000}
	// true 16
}

// MarshalBinary gives a compact canonical encoding; UnmarshalBinary reads it back.
func ExamplePNCounter_MarshalBinary() {
	var c crdt.PNCounter
	c.Increment(1, 3, 100)
	c.Decrement(1, 1, 101)

	b, err := c.MarshalBinary()
	if err != nil {
		panic(err)
	}
	fmt.Printf("% x\n", b)

	var back crdt.PNCounter
	if err := back.UnmarshalBinary(b); err != nil {
		panic(err)
	}
	fmt.Println(back.Equal(c), back.Value())
	// Output:
	// 92 93 01 03 64 93 01 01 65
	// true 2
}
