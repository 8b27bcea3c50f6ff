package demo

import (
	"fmt"
	"html"
	"io"
	"math"
	"strings"
	"time"
)

// Sample is the state of one rollout at one moment, as the demo saw it.
type Sample struct {
	At      time.Time
	Release string // "good" or "bad"
	Phase   string
	Weight  int
	// SuccessRate and P99 are the values of request-success-rate (percent) and
	// request-duration (ms) the analysis last measured, from the Canary's status; NaN
	// when it had none, the outcome then says why.
	SuccessRate    float64
	P99            float64
	SuccessOutcome string
	P99Outcome     string
	Failed         int
}

// Timeline is what the demo recorded, in order.
type Timeline struct {
	Samples []Sample
	// Thresholds of the seed Canary, drawn as dashed lines.
	SuccessThreshold float64
	LatencyThreshold float64
}

// Add records s.
func (t *Timeline) Add(s Sample) {
	t.Samples = append(t.Samples, s)
}

// Transitions are the samples where the phase changed: the picture marks them.
func (t *Timeline) Transitions() []Sample {
	var out []Sample
	for i, s := range t.Samples {
		if i == 0 || s.Phase != t.Samples[i-1].Phase || s.Release != t.Samples[i-1].Release {
			out = append(out, s)
		}
	}
	return out
}

const (
	svgWidth   = 960
	panelH     = 150
	marginLeft = 70
	marginTop  = 52
	panelGap   = 40
)

// WriteSVG draws three stacked panels sharing a time axis: canary weight, success rate and
// p99 latency, with the seed's thresholds dashed and each phase change marked. It is a
// self-contained SVG that any browser opens.
func (t *Timeline) WriteSVG(w io.Writer) error {
	if len(t.Samples) == 0 {
		return fmt.Errorf("write timeline: no samples recorded")
	}
	start := t.Samples[0].At
	end := t.Samples[len(t.Samples)-1].At
	span := end.Sub(start).Seconds()
	if span <= 0 {
		span = 1
	}
	plotW := float64(svgWidth - marginLeft - 20)
	x := func(at time.Time) float64 { return marginLeft + at.Sub(start).Seconds()/span*plotW }

	maxP99, minSuccess := t.LatencyThreshold*1.5, 80.0
	for _, s := range t.Samples {
		if !math.IsNaN(s.P99) && s.P99 > maxP99 {
			maxP99 = s.P99 * 1.1
		}
		if !math.IsNaN(s.SuccessRate) && s.SuccessRate < minSuccess {
			minSuccess = math.Floor(s.SuccessRate/10) * 10
		}
	}
	type panel struct {
		title    string
		min, max float64
		value    func(Sample) float64
		limit    float64
		color    string
	}
	panels := []panel{
		{"canary weight (%)", 0, 100, func(s Sample) float64 { return float64(s.Weight) }, math.NaN(), "#d9480f"},
		{"canary success rate (%), as the analysis measured it", minSuccess, 100, func(s Sample) float64 { return s.SuccessRate }, t.SuccessThreshold, "#2b8a3e"},
		{"canary p99 latency (ms), as the analysis measured it", 0, maxP99, func(s Sample) float64 { return s.P99 }, t.LatencyThreshold, "#1971c2"},
	}
	rows := 0
	for _, l := range layoutLabels(t.Transitions(), x, 0, svgWidth-4) {
		rows = max(rows, l.Row+1)
	}
	// Panels, the rows of phase labels under them, the time axis.
	height := marginTop + len(panels)*(panelH+panelGap) - panelGap + 14 + rows*labelRowH + 20

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="12">`+"\n", svgWidth, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	fmt.Fprintf(&b, `<text x="%d" y="22" font-size="16" font-weight="bold">coalmine demo: alice in apps-a-mesh-a (%.0f s)</text>`+"\n", marginLeft, span)

	for i, p := range panels {
		top := float64(marginTop + i*(panelH+panelGap))
		y := func(v float64) float64 {
			v = math.Max(p.min, math.Min(p.max, v))
			return top + panelH - (v-p.min)/(p.max-p.min)*panelH
		}
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" font-weight="bold">%s</text>`+"\n", marginLeft, top-6, html.EscapeString(p.title))
		fmt.Fprintf(&b, `<rect x="%d" y="%.0f" width="%.0f" height="%d" fill="none" stroke="#adb5bd"/>`+"\n", marginLeft, top, plotW, panelH)
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f</text>`+"\n", marginLeft-6, top+10, p.max)
		fmt.Fprintf(&b, `<text x="%d" y="%.0f" text-anchor="end">%.0f</text>`+"\n", marginLeft-6, top+panelH, p.min)
		if !math.IsNaN(p.limit) && p.limit > 0 {
			fmt.Fprintf(&b, `<line x1="%d" x2="%.0f" y1="%.1f" y2="%.1f" stroke="#c92a2a" stroke-dasharray="6 4"/>`+"\n", marginLeft, marginLeft+plotW, y(p.limit), y(p.limit))
			fmt.Fprintf(&b, `<text x="%.0f" y="%.1f" text-anchor="end" fill="#c92a2a">threshold %g</text>`+"\n", marginLeft+plotW-4, y(p.limit)-4, p.limit)
		}
		// A step line for the weight, a polyline broken at unknown values for metrics.
		var pts []string
		flush := func() {
			if len(pts) > 1 {
				fmt.Fprintf(&b, `<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>`+"\n", p.color, strings.Join(pts, " "))
			}
			pts = pts[:0]
		}
		for j, s := range t.Samples {
			v := p.value(s)
			if math.IsNaN(v) {
				flush()
				continue
			}
			if i == 0 && j > 0 && len(pts) > 0 {
				pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.At), y(p.value(t.Samples[j-1]))))
			}
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.At), y(v)))
		}
		flush()
	}
	// Phase changes: a vertical line through every panel, ending above the labels so it
	// crosses none; each label under the panels in the first row where it overlaps no
	// other label, starting where its line is (or ending at the right edge).
	bottom := float64(marginTop + len(panels)*(panelH+panelGap) - panelGap)
	labels := layoutLabels(t.Transitions(), x, bottom+14, svgWidth-4)
	for _, l := range labels {
		fmt.Fprintf(&b, `<line x1="%.1f" x2="%.1f" y1="%d" y2="%.0f" stroke="#868e96" stroke-dasharray="2 3"/>`+"\n", l.At, l.At, marginTop, bottom+3)
		fmt.Fprintf(&b, `<text x="%.1f" y="%.0f" font-size="%d" fill="#495057" class="phase-label">%s</text>`+"\n",
			l.X, l.Y, labelFontSize, html.EscapeString(l.Text))
	}
	// Time axis: seconds since the first sample.
	for _, frac := range []float64{0, 0.25, 0.5, 0.75, 1} {
		xs := marginLeft + frac*plotW
		fmt.Fprintf(&b, `<text x="%.0f" y="%d" text-anchor="middle" fill="#495057">%.0fs</text>`+"\n", xs, height-4, frac*span)
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// Phase labels: font size, the height of a row of them, and the width of a character
// (generous for a sans-serif at that size, so estimated boxes never undercut real ones).
const (
	labelFontSize = 10
	labelRowH     = 13
	labelCharW    = 6.5
)

// placedLabel is a phase label where layoutLabels put it: its box is [X, X+W] on row Row
// (baseline Y); At is the time's x, where its line is drawn.
type placedLabel struct {
	Text    string
	At      float64
	X, W, Y float64
	Row     int
}

// layoutLabels places one label per transition at its time (moved left when it would
// pass right), in the first row where it overlaps no other label: labels never overlap,
// however close the phase changes are.
func layoutLabels(transitions []Sample, x func(time.Time) float64, top, right float64) []placedLabel {
	var ends []float64 // per row, where its last label ends
	var out []placedLabel
	for _, s := range transitions {
		text := s.Release + " " + s.Phase
		w := float64(len(text))*labelCharW + 6
		at := x(s.At)
		left := math.Min(at, right-w)
		row := -1
		for r, end := range ends {
			if end <= left {
				row = r
				break
			}
		}
		if row < 0 {
			row = len(ends)
			ends = append(ends, 0)
		}
		ends[row] = left + w
		out = append(out, placedLabel{Text: text, At: at, X: left, W: w, Y: top + float64(row)*labelRowH, Row: row})
	}
	return out
}
