package demo

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Printer shows rollout progress: a weight bar and colours on a terminal, the same facts
// as plain lines elsewhere (CI logs). Either way a line is printed only when something it
// shows changed (Changed), never once per poll.
type Printer struct {
	Plain     bool
	Threshold int // failed checks that roll back
	last      string
}

const barWidth = 40

// metricText is a metric's value as the analysis recorded it in the Canary's status (the
// same digits), or why there is none.
func metricText(v float64, outcome, unit string) string {
	if math.IsNaN(v) {
		switch v1beta1.MetricOutcome(outcome) {
		case v1beta1.MetricNoData, v1beta1.MetricSkipped:
			return "no data"
		case v1beta1.MetricError:
			return "error"
		}
		return "n/a"
	}
	return strconv.FormatFloat(v, 'f', -1, 64) + unit
}

// Line renders one sample; it is what the user sees for every change.
func (p *Printer) Line(s Sample) string {
	succ := metricText(s.SuccessRate, s.SuccessOutcome, "%")
	p99 := metricText(s.P99, s.P99Outcome, "ms")
	if p.Plain {
		return fmt.Sprintf("%-4s %-16s primary=%3d%% canary=%3d%% success=%s p99=%s failedChecks=%d/%d",
			s.Release, s.Phase, 100-s.Weight, s.Weight, succ, p99, s.Failed, p.Threshold)
	}
	canary := s.Weight * barWidth / 100
	bar := "\x1b[34m" + strings.Repeat("█", barWidth-canary) + "\x1b[33m" + strings.Repeat("█", canary) + "\x1b[0m"
	phase := fmt.Sprintf("%-16s", s.Phase)
	switch s.Phase {
	case "Succeeded":
		phase = "\x1b[32m" + phase + "\x1b[0m"
	case "Failed":
		phase = "\x1b[31m" + phase + "\x1b[0m"
	}
	if s.SuccessOutcome == string(v1beta1.MetricFailed) {
		succ = "\x1b[31m" + succ + "\x1b[0m"
	}
	if s.P99Outcome == string(v1beta1.MetricFailed) {
		p99 = "\x1b[31m" + p99 + "\x1b[0m"
	}
	failed := fmt.Sprintf("%d/%d", s.Failed, p.Threshold)
	if s.Failed > 0 {
		failed = "\x1b[31m" + failed + "\x1b[0m"
	}
	return fmt.Sprintf("%-4s %s %s %3d%% canary  success %8s  p99 %6s  failed %s",
		s.Release, phase, bar, s.Weight, succ, p99, failed)
}

// Changed reports whether s differs from the last printed sample in anything shown, and
// remembers it when it does.
func (p *Printer) Changed(s Sample) bool {
	key := fmt.Sprintf("%s|%s|%d|%d|%s|%s", s.Release, s.Phase, s.Weight, s.Failed,
		metricText(s.SuccessRate, s.SuccessOutcome, ""), metricText(s.P99, s.P99Outcome, ""))
	if key == p.last {
		return false
	}
	p.last = key
	return true
}
