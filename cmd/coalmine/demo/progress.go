package demo

import (
	"fmt"
	"math"
	"strings"
)

// Printer shows rollout progress: a weight bar and colours on a terminal, the same facts
// as plain lines elsewhere (CI logs).
type Printer struct {
	Plain     bool
	Threshold int // failed checks that roll back
	last      string
}

const barWidth = 40

// Line renders one sample; it is what the user sees for every change.
func (p *Printer) Line(s Sample) string {
	succ, p99 := "    n/a", "   n/a"
	if !math.IsNaN(s.SuccessRate) {
		succ = fmt.Sprintf("%6.2f%%", s.SuccessRate)
	}
	if !math.IsNaN(s.P99) {
		p99 = fmt.Sprintf("%4.0fms", s.P99)
	}
	if p.Plain {
		return fmt.Sprintf("%-4s %-12s primary=%3d%% canary=%3d%% success=%s p99=%s failedChecks=%d/%d",
			s.Release, s.Phase, 100-s.Weight, s.Weight, strings.TrimSpace(succ), strings.TrimSpace(p99), s.Failed, p.Threshold)
	}
	canary := s.Weight * barWidth / 100
	bar := "\x1b[34m" + strings.Repeat("█", barWidth-canary) + "\x1b[33m" + strings.Repeat("█", canary) + "\x1b[0m"
	phase := s.Phase
	switch s.Phase {
	case "Succeeded":
		phase = "\x1b[32m" + phase + "\x1b[0m"
	case "Failed":
		phase = "\x1b[31m" + phase + "\x1b[0m"
	}
	failed := fmt.Sprintf("%d/%d", s.Failed, p.Threshold)
	if s.Failed > 0 {
		failed = "\x1b[31m" + failed + "\x1b[0m"
	}
	return fmt.Sprintf("%-4s %-21s %s %3d%% canary  success %s  p99 %s  failed %s",
		s.Release, phase, bar, s.Weight, succ, p99, failed)
}

// Changed reports whether s differs from the last printed sample in anything shown.
func (p *Printer) Changed(s Sample) bool {
	key := fmt.Sprintf("%s|%s|%d|%d|%.1f|%.0f", s.Release, s.Phase, s.Weight, s.Failed, s.SuccessRate, s.P99)
	if key == p.last {
		return false
	}
	p.last = key
	return true
}
