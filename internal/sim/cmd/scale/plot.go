package main

// A hand-written SVG: three panels against N (convergence times, idle
// bytes per peer per second, idle CPU per peer), each a polyline per
// series on linear axes from zero, with the values written at the points.

import (
	"fmt"
	"math"
	"strings"
)

type series struct {
	name  string
	color string
	y     func(Result) float64
	phase phase // when it is measured: rows that stopped before have no point
}

// phase is the part of a size's run a series is measured in.
type phase int

const (
	inJoin  phase = iota // the mass join: every row
	afterIt              // the joiner and the kill: not in a -join-only row
	idling               // the idle window: not in -join-only or -no-idle rows
)

// ran is the last phase r's run measured (-join-only, -no-idle or all).
func (r Result) ran() phase {
	switch {
	case r.JoinOnly:
		return inJoin
	case r.NoIdle:
		return afterIt
	}
	return idling
}

// rows returns the results that have s.
func (s series) rows(rs []Result) []Result {
	var out []Result
	for _, r := range rs {
		if s.phase <= r.ran() {
			out = append(out, r)
		}
	}
	return out
}

type panel struct {
	title  string
	unit   string
	series []series
}

func plot(rs []Result) string {
	panels := []panel{
		{"Convergence after a mass join", "seconds", []series{
			{"all see all alive", "#1f77b4", func(r Result) float64 { return r.MembersS }, inJoin},
			{"ring agreed", "#d62728", func(r Result) float64 { return r.RingS }, inJoin},
			{"kill seen by all", "#2ca02c", func(r Result) float64 { return r.KillSeenS }, afterIt},
			{"joiner has ring", "#9467bd", func(r Result) float64 { return r.JoinRingS }, afterIt},
		}},
		{"Idle traffic per peer", "bytes/s (sent+received)", []series{
			{"bytes/peer/s", "#ff7f0e", func(r Result) float64 { return r.IdleBytesPerS }, idling},
		}},
		{"Idle CPU per peer", "% of one core", []series{
			{"CPU/peer", "#8c564b", func(r Result) float64 { return 100 * r.IdleCPUPerPeer }, idling},
		}},
	}
	const pw, ph, ml, mr, mt, mb = 360.0, 280.0, 60.0, 20.0, 40.0, 90.0
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" font-family="sans-serif" font-size="11">`+"\n",
		float64(len(panels))*(pw+ml+mr), ph+mt+mb)
	b.WriteString(`<rect width="100%" height="100%" fill="white"/>` + "\n")
	maxN := 0.0
	for _, r := range rs {
		maxN = math.Max(maxN, float64(r.Peers))
	}
	for i, p := range panels {
		x0 := float64(i)*(pw+ml+mr) + ml
		maxY := 0.0
		for _, s := range p.series {
			for _, r := range s.rows(rs) {
				maxY = math.Max(maxY, s.y(r))
			}
		}
		maxY = niceCeil(maxY)
		px := func(n float64) float64 { return x0 + n/maxN*pw }
		py := func(v float64) float64 { return mt + ph - v/maxY*ph }
		fmt.Fprintf(&b, `<text x="%.0f" y="20" font-size="13" font-weight="bold">%s</text>`+"\n", x0, p.title)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", x0, mt+ph, x0+pw, mt+ph)
		fmt.Fprintf(&b, `<line x1="%.0f" y1="%.0f" x2="%.0f" y2="%.0f" stroke="black"/>`+"\n", x0, mt, x0, mt+ph)
		for k := 0; k <= 4; k++ {
			v := maxY * float64(k) / 4
			fmt.Fprintf(&b, `<line x1="%.0f" y1="%.1f" x2="%.0f" y2="%.1f" stroke="#ddd"/>`+"\n", x0, py(v), x0+pw, py(v))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end">%s</text>`+"\n", x0-4, py(v)+4, short(v))
		}
		for _, r := range rs {
			fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" text-anchor="middle">%d</text>`+"\n", px(float64(r.Peers)), mt+ph+14, r.Peers)
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.0f" text-anchor="middle">peers (N)</text>`+"\n", x0+pw/2, mt+ph+30)
		fmt.Fprintf(&b, `<text transform="translate(%.0f,%.0f) rotate(-90)" text-anchor="middle">%s</text>`+"\n", x0-45, mt+ph/2, p.unit)
		for j, s := range p.series {
			var pts []string
			for _, r := range s.rows(rs) {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", px(float64(r.Peers)), py(s.y(r))))
			}
			fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", s.color, strings.Join(pts, " "))
			for _, r := range s.rows(rs) {
				fmt.Fprintf(&b, `<circle cx="%.1f" cy="%.1f" r="3" fill="%s"><title>%s N=%d: %s</title></circle>`+"\n",
					px(float64(r.Peers)), py(s.y(r)), s.color, s.name, r.Peers, short(s.y(r)))
			}
			ly := mt + ph + 46 + float64(j)*13
			fmt.Fprintf(&b, `<rect x="%.0f" y="%.0f" width="10" height="10" fill="%s"/><text x="%.0f" y="%.0f">%s</text>`+"\n",
				x0, ly-9, s.color, x0+14, ly, s.name)
		}
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// niceCeil rounds v up to 1, 2 or 5 times a power of ten.
func niceCeil(v float64) float64 {
	if v <= 0 {
		return 1
	}
	e := math.Pow(10, math.Floor(math.Log10(v)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*e >= v {
			return m * e
		}
	}
	return 10 * e
}

func short(v float64) string {
	switch {
	case v >= 10000:
		return fmt.Sprintf("%.0fk", v/1000)
	case v >= 100:
		return fmt.Sprintf("%.0f", v)
	case v >= 10:
		return fmt.Sprintf("%.1f", v)
	}
	return fmt.Sprintf("%.2f", v)
}
