//go:build race

package sim

// raceEnabled: the race detector slows the simulator ~10×; tests run fewer
// and shorter seeds under it.
const raceEnabled = true
