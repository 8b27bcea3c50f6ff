package ctl

import (
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The loop's names this package shows (rollout/operator.go, rollout/status.go). ctl does
// not link the loop; TestNamesAgreeWithTheLoop keeps them equal.
const (
	conditionPaused      = "Paused"
	conditionReady       = "Ready"
	reasonCommand        = "OperatorCommand"
	reasonCommandRefused = "OperatorCommandRefused"
)

const (
	weightBarCells = 10
	columnGap      = 2
	noteIndent     = "  - "
	none           = "-"
)

const (
	ansiReset   = "\x1b[0m"
	ansiBold    = "\x1b[1m"
	ansiDim     = "\x1b[2m"
	ansiRed     = "\x1b[31m"
	ansiGreen   = "\x1b[32m"
	ansiYellow  = "\x1b[33m"
	ansiBlue    = "\x1b[34m"
	ansiMagenta = "\x1b[35m"
	ansiCyan    = "\x1b[36m"
)

// tableOptions say how the table looks.
type tableOptions struct {
	now time.Time
	// allNamespaces adds the NAMESPACE column.
	allNamespaces bool
	// color uses ANSI colours and a block-character weight bar.
	color bool
}

// cell is one table cell: its visible text and, on a terminal, its colour, or the
// styled text to print instead (same visible width).
type cell struct {
	text   string
	color  string
	styled string
}

func plain(s string) cell { return cell{text: s} }

// renderTable writes the status table of canaries: one row per Canary (NAME, PHASE, a
// weight bar, FAILED checks against the threshold, REVISION, AGE in the phase) with its
// first metric, one more row per further metric (last value against its threshold, and
// the check's result), then notes: a pause and how long it has held, a pending command,
// why a rollout failed or waits.
func renderTable(w io.Writer, canaries []v1beta1.Canary, o tableOptions) error {
	sorted := append([]v1beta1.Canary(nil), canaries...)
	sortCanaries(sorted)
	header := []string{"NAME", "PHASE", "WEIGHT", "FAILED", "REVISION", "AGE", "METRIC", "VALUE", "THRESHOLD", "RESULT"}
	if o.allNamespaces {
		header = append([]string{"NAMESPACE"}, header...)
	}
	rows := [][]cell{}
	head := make([]cell, len(header))
	for i, h := range header {
		head[i] = plain(h)
	}
	rows = append(rows, head)
	// notes[i] are the notes printed after row i.
	notes := map[int][]string{}
	for i := range sorted {
		c := &sorted[i]
		first := canaryCells(c, o)
		if o.allNamespaces {
			first = append([]cell{plain(c.Namespace)}, first...)
		}
		metrics := metricRows(c, o)
		rows = append(rows, append(first, metrics[0]...))
		for _, m := range metrics[1:] {
			blank := make([]cell, len(first))
			rows = append(rows, append(blank, m...))
		}
		if n := canaryNotes(c, o.now); len(n) > 0 {
			notes[len(rows)-1] = n
		}
	}

	widths := make([]int, len(header))
	for _, r := range rows {
		for i, c := range r {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	indent := ""
	if o.allNamespaces {
		indent = strings.Repeat(" ", widths[0]+columnGap)
	}
	var b strings.Builder
	for i, r := range rows {
		var line strings.Builder
		for j, c := range r {
			text := c.text
			switch {
			case !o.color || text == "":
			case c.styled != "":
				text = c.styled
			case c.color != "":
				text = c.color + text + ansiReset
			}
			line.WriteString(text)
			if j < len(r)-1 {
				line.WriteString(strings.Repeat(" ", widths[j]-utf8.RuneCountInString(c.text)+columnGap))
			}
		}
		b.WriteString(strings.TrimRight(line.String(), " "))
		b.WriteByte('\n')
		for _, n := range notes[i] {
			if o.color {
				n = ansiDim + n + ansiReset
			}
			b.WriteString(indent + noteIndent + n + "\n")
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// sortCanaries orders by namespace, then name.
func sortCanaries(cs []v1beta1.Canary) {
	sort.Slice(cs, func(i, j int) bool {
		if cs[i].Namespace != cs[j].Namespace {
			return cs[i].Namespace < cs[j].Namespace
		}
		return cs[i].Name < cs[j].Name
	})
}

// canaryCells are NAME .. AGE of a Canary.
func canaryCells(c *v1beta1.Canary, o tableOptions) []cell {
	s := c.Status
	phase := cell{text: string(s.Phase), color: phaseColor(s.Phase)}
	if s.Phase == "" {
		phase = plain(none)
	}
	if paused(c) {
		phase = cell{text: phase.text + " (paused)", color: ansiMagenta}
	}
	failed := cell{text: fmt.Sprintf("%d/%d", s.FailedChecks, c.Threshold())}
	if s.FailedChecks > 0 {
		failed.color = ansiRed
	}
	age := none
	if s.LastTransitionTime != nil {
		age = duration.HumanDuration(o.now.Sub(s.LastTransitionTime.Time))
	}
	return []cell{
		{text: c.Name, color: ansiBold},
		phase,
		weightCell(s.CanaryWeight, o.color),
		failed,
		plain(orNone(revisionOf(c))),
		plain(age),
	}
}

// weightCell is a bar of the canary's share of the traffic and the percentage: on a
// terminal yellow blocks for the canary on a dim track, elsewhere "#" on ".".
func weightCell(w int, color bool) cell {
	w = min(max(w, 0), 100)
	n := (w*weightBarCells + 99) / 100 // any traffic at all shows
	pct := fmt.Sprintf("%3d%%", w)
	c := plain(strings.Repeat("#", n) + strings.Repeat(".", weightBarCells-n) + " " + pct)
	if color {
		c.styled = ansiYellow + strings.Repeat("█", n) + ansiReset + ansiBlue + strings.Repeat("░", weightBarCells-n) + ansiReset + " " + pct
	}
	return c
}

// revisionOf is the revision the row is about: the one analysed or promoted right now,
// the failed one after a rollback, else the stable one.
func revisionOf(c *v1beta1.Canary) string {
	s := c.Status
	switch s.Phase {
	case v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded, v1beta1.PhaseInitializing, "":
		return s.StableRevision
	}
	if s.CanaryRevision != "" {
		return s.CanaryRevision
	}
	return s.StableRevision
}

// metricRows are the METRIC, VALUE, THRESHOLD, RESULT cells of each metric of the
// analysis, in the order of the spec; metrics only the status knows come last. At least
// one row.
func metricRows(c *v1beta1.Canary, o tableOptions) [][]cell {
	var spec []v1beta1.CanaryMetric
	if c.Spec.Analysis != nil {
		spec = c.Spec.Analysis.Metrics
	}
	last := map[string]v1beta1.MetricStatus{}
	for _, m := range c.Status.Metrics {
		last[m.Name] = m
	}
	var rows [][]cell
	seen := map[string]bool{}
	for _, m := range spec {
		seen[m.Name] = true
		st, measured := last[m.Name]
		rows = append(rows, metricRow(m.Name, unitOf(m), thresholdOf(m), st, measured))
	}
	for _, st := range c.Status.Metrics {
		if !seen[st.Name] {
			rows = append(rows, metricRow(st.Name, "", none, st, true))
		}
	}
	if len(rows) == 0 {
		rows = append(rows, []cell{plain(none), plain(""), plain(""), plain("")})
	}
	return rows
}

func metricRow(name, unit, threshold string, st v1beta1.MetricStatus, measured bool) []cell {
	value := none
	if measured && st.Value != "" {
		value = st.Value + unit
	}
	result := cell{text: "pending", color: ansiDim}
	if measured && st.Outcome != "" {
		result = outcomeCell(st.Outcome)
	}
	return []cell{plain(name), plain(value), plain(threshold), result}
}

func outcomeCell(o v1beta1.MetricOutcome) cell {
	switch o {
	case v1beta1.MetricPassed:
		return cell{text: "passed", color: ansiGreen}
	case v1beta1.MetricFailed:
		return cell{text: "FAILED", color: ansiRed}
	case v1beta1.MetricNoData:
		return cell{text: "no data", color: ansiYellow}
	case v1beta1.MetricError:
		return cell{text: "error", color: ansiRed}
	case v1beta1.MetricSkipped:
		return cell{text: "skipped", color: ansiDim}
	}
	return plain(strings.ToLower(string(o)))
}

// builtinKind says whether m is one of the builtins, which have units and a direction.
func builtinKind(m v1beta1.CanaryMetric) string {
	if m.TemplateRef != nil {
		return ""
	}
	switch m.Name {
	case v1beta1.MetricRequestSuccessRate, v1beta1.MetricRequestDuration:
		return m.Name
	}
	return ""
}

func unitOf(m v1beta1.CanaryMetric) string {
	switch builtinKind(m) {
	case v1beta1.MetricRequestSuccessRate:
		return "%"
	case v1beta1.MetricRequestDuration:
		return "ms"
	}
	return ""
}

// thresholdOf is the condition a value must meet to pass, as the loop judges it
// (rollout/analysis): thresholdRange wins; a success rate passes at or above its
// threshold, a duration and a template metric at or below it.
func thresholdOf(m v1beta1.CanaryMetric) string {
	unit := unitOf(m)
	num := func(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) + unit }
	if tr := m.ThresholdRange; tr != nil {
		switch {
		case tr.Min != nil && tr.Max != nil:
			return num(*tr.Min) + " .. " + num(*tr.Max)
		case tr.Min != nil:
			return ">= " + num(*tr.Min)
		case tr.Max != nil:
			return "<= " + num(*tr.Max)
		}
		return "any"
	}
	if builtinKind(m) == v1beta1.MetricRequestSuccessRate {
		return ">= " + num(m.Threshold)
	}
	return "<= " + num(m.Threshold)
}

// canaryNotes are the lines under a Canary's rows: what it waits for, why it failed.
func canaryNotes(c *v1beta1.Canary, now time.Time) []string {
	var out []string
	if cmd := c.Annotations[v1beta1.AnnotationCommand]; cmd != "" {
		by := c.Annotations[v1beta1.AnnotationCommandBy]
		if by == "" {
			by = "an unrecorded user"
		}
		out = append(out, fmt.Sprintf("command %s pending (asked by %s)", cmd, by))
	}
	if p := meta.FindStatusCondition(c.Status.Conditions, conditionPaused); p != nil && p.Status == metav1.ConditionTrue {
		out = append(out, fmt.Sprintf("held for %s: %s", duration.HumanDuration(now.Sub(p.LastTransitionTime.Time)), p.Message))
	}
	s := c.Status
	switch s.Phase {
	case v1beta1.PhaseFailed, v1beta1.PhaseWaiting, v1beta1.PhaseWaitingPromotion:
		if s.Message != "" {
			out = append(out, s.Message)
		}
	}
	if r := meta.FindStatusCondition(s.Conditions, conditionReady); r != nil && r.Status == metav1.ConditionFalse &&
		r.Message != "" && r.Message != s.Message && s.Phase != v1beta1.PhaseFailed {
		out = append(out, "not ready: "+r.Message)
	}
	return out
}

func paused(c *v1beta1.Canary) bool {
	return meta.IsStatusConditionTrue(c.Status.Conditions, conditionPaused)
}

func phaseColor(p v1beta1.CanaryPhase) string {
	switch p {
	case v1beta1.PhaseSucceeded, v1beta1.PhaseInitialized:
		return ansiGreen
	case v1beta1.PhaseFailed:
		return ansiRed
	case v1beta1.PhaseProgressing, v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		return ansiCyan
	case v1beta1.PhaseWaiting, v1beta1.PhaseWaitingPromotion:
		return ansiYellow
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return none
	}
	return s
}

// summaryLine is one Canary on one line, for --watch when the output is not a terminal
// and for the commands' outcome: what changed is what is printed.
func summaryLine(c *v1beta1.Canary) string {
	s := c.Status
	phase := string(s.Phase)
	if phase == "" {
		phase = none
	}
	if paused(c) {
		phase += " (paused)"
	}
	parts := []string{
		c.Namespace + "/" + c.Name, phase,
		fmt.Sprintf("weight=%d%%", s.CanaryWeight),
		fmt.Sprintf("failed=%d/%d", s.FailedChecks, c.Threshold()),
		"revision=" + orNone(revisionOf(c)),
	}
	for _, m := range metricRows(c, tableOptions{}) {
		if m[0].text == none {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%s(%s %s)", m[0].text, m[1].text, m[2].text, m[3].text))
	}
	if cmd := c.Annotations[v1beta1.AnnotationCommand]; cmd != "" {
		parts = append(parts, "command="+cmd)
	}
	line := strings.Join(parts, " ")
	switch s.Phase {
	case v1beta1.PhaseFailed, v1beta1.PhaseWaiting, v1beta1.PhaseWaitingPromotion:
		if s.Message != "" {
			line += ": " + s.Message
		}
	}
	return line
}
