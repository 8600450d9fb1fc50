package sim

import (
	"bytes"
	"fmt"
	"html"
	"os"
	"slices"
	"time"
)

// plotData is what --plot draws: per sample, each region's count and the
// reference; and the partitions and region outages to shade.
type plotData struct {
	video   int // -1: the sum over all videos
	times   []time.Duration
	ref     []uint64
	regions [][]int64 // [sample][region]; -1 when no node of the region is up
	faults  []*fault
}

// plotSample records the current counts. A region's count is the lowest of
// its live nodes (the lagging replica a reader might hit).
func (s *Sim) plotSample() {
	pd := s.plot
	val := func(counts []uint64) uint64 {
		if pd.video >= 0 {
			return counts[pd.video]
		}
		var sum uint64
		for _, c := range counts {
			sum += c
		}
		return sum
	}
	row := make([]int64, len(s.regions))
	for r := range row {
		row[r] = -1
	}
	for _, nd := range s.nodes {
		if !nd.up {
			continue
		}
		v := int64(val(nd.last[evView]))
		if row[nd.region] < 0 || v < row[nd.region] {
			row[nd.region] = v
		}
	}
	pd.times = append(pd.times, s.now)
	pd.ref = append(pd.ref, val(s.acct.ref[evView]))
	pd.regions = append(pd.regions, row)
}

var plotColors = []string{"#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf", "#bcbd22"}

// writePlot draws the run as a hand-written SVG.
func (s *Sim) writePlot(file, video string) error {
	pd := s.plot
	if len(pd.times) == 0 {
		return fmt.Errorf("plot: no samples")
	}
	const (
		w, h                   = 1000.0, 520.0
		left, right, top, bott = 70.0, 150.0, 40.0, 50.0
	)
	tEnd := pd.times[len(pd.times)-1]
	yMax := float64(slices.Max(pd.ref))
	for _, row := range pd.regions {
		for _, v := range row {
			yMax = max(yMax, float64(v))
		}
	}
	yMax = max(yMax, 1) * 1.05
	x := func(t time.Duration) float64 { return left + (w-left-right)*float64(t)/float64(max(tEnd, 1)) }
	y := func(v float64) float64 { return h - bott - (h-top-bott)*v/yMax }

	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="12">`+"\n", w, h)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	what := "sum over all videos"
	if pd.video >= 0 {
		what = "video " + video
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="14">tally sim seed %d: each region's count (lowest live node) vs reference, %s</text>`+"\n", left, s.p.Seed, html.EscapeString(what))
	// Shading: partitions grey, region outages red.
	for _, f := range pd.faults {
		end := f.endAt
		if end <= f.at {
			end = tEnd
		}
		fill := "#000000"
		if f.kind == faultRegionDown {
			fill = "#ff0000"
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.0f" width="%.1f" height="%.0f" fill="%s" fill-opacity="0.08"><title>%s %s</title></rect>`+"\n",
			x(f.at), top, max(x(end)-x(f.at), 1), h-top-bott, fill, f.kind, html.EscapeString(f.desc))
	}
	// Axes and grid.
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, h-bott, w-right, h-bott)
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", left, top, left, h-bott)
	step := 10 * time.Second
	if tEnd > 200*time.Second {
		step = time.Minute
	}
	for t := time.Duration(0); t <= tEnd; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="#ddd"/><text x="%.1f" y="%.0f" text-anchor="middle">%.0fs</text>`+"\n",
			x(t), top, x(t), h-bott, x(t), h-bott+16, t.Seconds())
	}
	for i := 0; i <= 5; i++ {
		v := yMax / 1.05 * float64(i) / 5
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/><text x="%.0f" y="%.1f" text-anchor="end">%.0f</text>`+"\n",
			left, y(v), w-right, y(v), left-6, y(v)+4, v)
	}
	fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">simulated time</text>`+"\n", (left+w-right)/2, h-12)
	if s.phase >= phaseLiveness {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.0f" x2="%.1f" y2="%.0f" stroke="black" stroke-dasharray="2,3"/><text x="%.1f" y="%.0f" text-anchor="end">heal</text>`+"\n",
			x(s.healAt), top, x(s.healAt), h-bott, x(s.healAt)-3, top+12)
	}
	// Series.
	polyline := func(color, dash string, value func(i int) (float64, bool)) {
		var pts bytes.Buffer
		flush := func() {
			if pts.Len() > 0 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="1.5"%s points="%s"/>`+"\n", color, dash, bytes.TrimSpace(pts.Bytes()))
				pts.Reset()
			}
		}
		for i, t := range pd.times {
			v, ok := value(i)
			if !ok {
				flush()
				continue
			}
			fmt.Fprintf(&pts, "%.1f,%.1f ", x(t), y(v))
		}
		flush()
	}
	for r := range s.regions {
		polyline(plotColors[r%len(plotColors)], "", func(i int) (float64, bool) {
			v := pd.regions[i][r]
			return float64(v), v >= 0
		})
	}
	polyline("black", ` stroke-dasharray="6,4"`, func(i int) (float64, bool) { return float64(pd.ref[i]), true })
	// Legend.
	ly := top + 10
	for r, name := range s.regions {
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="%s" stroke-width="2"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
			w-right+10, ly, w-right+35, ly, plotColors[r%len(plotColors)], w-right+40, ly+4, name)
		ly += 18
	}
	fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black" stroke-dasharray="6,4"/><text x="%.0f" y="%.0f">reference</text>`+"\n",
		w-right+10, ly, w-right+35, ly, w-right+40, ly+4)
	ly += 18
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="25" height="10" fill="#000" fill-opacity="0.15"/><text x="%.0f" y="%.0f">partition</text>`+"\n", w-right+10, ly-5, w-right+40, ly+4)
	ly += 18
	fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="25" height="10" fill="#f00" fill-opacity="0.15"/><text x="%.0f" y="%.0f">region down</text>`+"\n", w-right+10, ly-5, w-right+40, ly+4)
	b.WriteString("</svg>\n")
	return os.WriteFile(file, b.Bytes(), 0o644)
}
