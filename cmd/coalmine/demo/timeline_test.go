package demo

import (
	"bytes"
	"encoding/xml"
	"math"
	"strings"
	"testing"
	"time"
)

func TestTimelineSVG(t *testing.T) {
	t0 := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
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
