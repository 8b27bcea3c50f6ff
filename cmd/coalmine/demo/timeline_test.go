package demo

import (
	"bytes"
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestTimelineSVG(t *testing.T) {
	tl := Timeline{SuccessThreshold: 99, LatencyThreshold: 500}
	for i, w := range []int{0, 5, 10, 0} {
		phase := "Progressing"
		if i == 3 {
			phase = "Succeeded"
		}
		tl.Add(Sample{At: t0.Add(time.Duration(i) * time.Second), Release: "good", Phase: phase, Weight: w, SuccessRate: 100, P99: math.NaN()})
	}
	var buf bytes.Buffer
	if err := tl.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Fatalf("timeline is not well-formed XML: %v", err)
	}
	for _, want := range []string{"canary weight", "threshold 99", "good Succeeded"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("timeline lacks %q", want)
		}
	}
	if got := len(tl.Transitions()); got != 2 {
		t.Errorf("transitions = %d, want 2 (Progressing, Succeeded)", got)
	}
}

func TestTimelineEmpty(t *testing.T) {
	if err := new(Timeline).WriteSVG(&bytes.Buffer{}); err == nil {
		t.Fatal("want an error for an empty timeline")
	}
}

// TestTimelinePhaseLabelsDoNotOverlap: the demo's phase changes come in bursts (Promoting,
// Finalising, Succeeded within a second or two; the bad release's Progressing right after)
// and at the picture's right edge; no two labels may overlap.
func TestTimelinePhaseLabelsDoNotOverlap(t *testing.T) {
	tl := Timeline{SuccessThreshold: 99, LatencyThreshold: 500}
	at := 0.0
	add := func(release, phase string, after float64) {
		at += after
		tl.Add(Sample{At: t0.Add(time.Duration(at * float64(time.Second))), Release: release, Phase: phase, SuccessRate: 100, P99: 40})
	}
	add("good", "Progressing", 0)
	add("good", "Promoting", 30)
	add("good", "Finalising", 0.5)
	add("good", "Succeeded", 0.5)
	add("bad", "Progressing", 1)
	add("bad", "WaitingPromotion", 0.2)
	add("bad", "Failed", 20)
	add("bad", "Failed", 0.1)
	x := func(ts time.Time) float64 {
		return marginLeft + ts.Sub(t0).Seconds()/at*float64(svgWidth-marginLeft-20)
	}
	labels := layoutLabels(tl.Transitions(), x, 0, svgWidth-4)
	if len(labels) != 7 {
		t.Fatalf("%d labels, want one per phase change (7)", len(labels))
	}
	for i, a := range labels {
		if a.X < 0 || a.X+a.W > svgWidth-4 {
			t.Errorf("label %q [%.0f, %.0f] leaves the picture", a.Text, a.X, a.X+a.W)
		}
		for _, b := range labels[i+1:] {
			if a.Row == b.Row && a.X < b.X+b.W && b.X < a.X+a.W {
				t.Errorf("labels %q [%.0f, %.0f] and %q [%.0f, %.0f] overlap on row %d", a.Text, a.X, a.X+a.W, b.Text, b.X, b.X+b.W, a.Row)
			}
		}
	}
	var buf bytes.Buffer
	if err := tl.WriteSVG(&buf); err != nil {
		t.Fatal(err)
	}
	if err := xml.Unmarshal(buf.Bytes(), new(struct{})); err != nil {
		t.Fatalf("timeline is not well-formed XML: %v", err)
	}
	if got := strings.Count(buf.String(), `class="phase-label"`); got != 7 {
		t.Errorf("%d phase labels drawn, want 7", got)
	}
}

// TestPrinterPrintsOnlyChanges: polls that see the same status print nothing; a new
// check's values, a step or a phase change print one line, with the status's digits.
func TestPrinterPrintsOnlyChanges(t *testing.T) {
	p := &Printer{Plain: true, Threshold: 5}
	st := v1beta1.CanaryStatus{Phase: v1beta1.PhaseProgressing, CanaryWeight: 5, Metrics: []v1beta1.MetricStatus{
		{Name: v1beta1.MetricRequestSuccessRate, Value: "97.125", Outcome: v1beta1.MetricFailed},
		{Name: v1beta1.MetricRequestDuration, Outcome: v1beta1.MetricNoData},
	}}
	var lines []string
	poll := func() {
		if s := sampleOf("bad", st, time.Now()); p.Changed(s) {
			lines = append(lines, p.Line(s))
		}
	}
	poll()
	poll()
	poll()
	st.FailedChecks = 1
	poll()
	poll()
	st.Metrics[0].Value = "93.5"
	poll()
	st.Phase, st.CanaryWeight = v1beta1.PhaseFailed, 0
	poll()
	poll()
	if len(lines) != 4 {
		t.Fatalf("%d lines for 4 changes in 8 polls:\n%s", len(lines), strings.Join(lines, "\n"))
	}
	if want := "bad  Progressing      primary= 95% canary=  5% success=97.125% p99=no data failedChecks=0/5"; lines[0] != want {
		t.Errorf("line\n %q\nwant\n %q", lines[0], want)
	}
	if !strings.Contains(lines[2], "success=93.5%") || !strings.Contains(lines[3], "Failed") {
		t.Errorf("lines %q", lines)
	}
}
