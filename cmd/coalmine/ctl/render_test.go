package ctl

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout"
)

var now = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) *metav1.Time { return &metav1.Time{Time: now.Add(-d)} }

func float(f float64) *float64 { return &f }

// seedCanary is the seed's alice: success rate >= 99 %, p99 <= 500 ms, threshold 5.
func seedCanary(ns, name string) v1beta1.Canary {
	return v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{}},
		Spec: v1beta1.CanarySpec{
			TargetRef: v1beta1.LocalObjectReference{Name: name},
			Analysis: &v1beta1.CanaryAnalysis{
				Threshold: 5, MaxWeight: 50, StepWeight: 5,
				Metrics: []v1beta1.CanaryMetric{
					{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99},
					{Name: v1beta1.MetricRequestDuration, Threshold: 500},
				},
			},
		},
	}
}

func progressing() v1beta1.Canary {
	c := seedCanary("apps-a-mesh-a", "alice")
	c.Status = v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseProgressing, CanaryWeight: 15, FailedChecks: 1,
		StableRevision: "0a1b2c3d4e", CanaryRevision: "5f6e7d8c9b",
		LastTransitionTime: ago(48 * time.Second),
		Metrics: []v1beta1.MetricStatus{
			{Name: v1beta1.MetricRequestSuccessRate, Value: "99.93", Outcome: v1beta1.MetricPassed},
			{Name: v1beta1.MetricRequestDuration, Value: "612", Outcome: v1beta1.MetricFailed},
		},
	}
	return c
}

func render(t *testing.T, cs []v1beta1.Canary, o tableOptions) string {
	t.Helper()
	var b strings.Builder
	if err := renderTable(&b, cs, o); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

func TestStatusTable(t *testing.T) {
	failed := seedCanary("apps-a-mesh-a", "bob")
	failed.Status = v1beta1.CanaryStatus{
		Phase: v1beta1.PhaseFailed, FailedChecks: 5, StableRevision: "0a1b2c3d4e", CanaryRevision: "77aa88bb99",
		FailedRevision: "77aa88bb99", LastTransitionTime: ago(3 * time.Hour),
		Message: "rolled back revision 77aa88bb99: request-success-rate 80.12 < 99",
		Metrics: []v1beta1.MetricStatus{{Name: v1beta1.MetricRequestSuccessRate, Value: "80.12", Outcome: v1beta1.MetricFailed}},
	}
	got := render(t, []v1beta1.Canary{failed, progressing()}, tableOptions{now: now})
	want := `NAME   PHASE        WEIGHT           FAILED  REVISION    AGE  METRIC                VALUE   THRESHOLD  RESULT
alice  Progressing  ##........  15%  1/5     5f6e7d8c9b  48s  request-success-rate  99.93%  >= 99%     passed
                                                              request-duration      612ms   <= 500ms   FAILED
bob    Failed       ..........   0%  5/5     77aa88bb99  3h   request-success-rate  80.12%  >= 99%     FAILED
                                                              request-duration      -       <= 500ms   pending
  - rolled back revision 77aa88bb99: request-success-rate 80.12 < 99
`
	if got != want {
		t.Errorf("table:\n%s\nwant:\n%s", got, want)
	}
}

func TestStatusTableAllNamespacesPauseAndCommand(t *testing.T) {
	c := progressing()
	c.Annotations[v1beta1.AnnotationCommand] = v1beta1.CommandResume
	c.Annotations[v1beta1.AnnotationCommandBy] = "jane@example.com"
	c.Status.Conditions = []metav1.Condition{{
		Type: conditionPaused, Status: metav1.ConditionTrue, Reason: "OperatorPause", LastTransitionTime: *ago(90 * time.Second),
		Message: "paused by jane@example.com at canary weight 15% since 2026-03-01T11:58:30Z; resume with `coalmine resume -n apps-a-mesh-a alice`",
	}}
	other := seedCanary("apps-b", "carol")
	other.Status = v1beta1.CanaryStatus{Phase: v1beta1.PhaseSucceeded, StableRevision: "1234567890", CanaryRevision: "1234567890", LastTransitionTime: ago(26 * time.Hour)}
	got := render(t, []v1beta1.Canary{other, c}, tableOptions{now: now, allNamespaces: true})
	for _, want := range []string{
		"NAMESPACE      NAME   PHASE                 WEIGHT",
		"apps-a-mesh-a  alice  Progressing (paused)  ##........  15%",
		"apps-b         carol  Succeeded             ..........   0%  0/5     1234567890  26h",
		"                 - command resume pending (asked by jane@example.com)",
		"                 - held for 90s: paused by jane@example.com at canary weight 15%",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	// Notes follow their own Canary.
	if strings.Index(got, "held for") > strings.Index(got, "carol") {
		t.Errorf("alice's notes printed after carol:\n%s", got)
	}
}

var ansi = regexp.MustCompile("\x1b\\[[0-9;]*m")

// On a terminal the same table is coloured, the bar drawn with blocks; every column stays
// where the plain table has it.
func TestStatusTableColour(t *testing.T) {
	cs := []v1beta1.Canary{progressing()}
	plainOut := render(t, cs, tableOptions{now: now})
	coloured := render(t, cs, tableOptions{now: now, color: true})
	if !strings.Contains(coloured, "\x1b[33m██\x1b[0m\x1b[34m░░░░░░░░\x1b[0m  15%") {
		t.Errorf("no block weight bar:\n%q", coloured)
	}
	if !strings.Contains(coloured, ansiRed+"FAILED"+ansiReset) || !strings.Contains(coloured, ansiGreen+"passed"+ansiReset) {
		t.Errorf("results not coloured:\n%q", coloured)
	}
	stripped := strings.NewReplacer("█", "#", "░", ".").Replace(ansi.ReplaceAllString(coloured, ""))
	if stripped != plainOut {
		t.Errorf("coloured table, colours removed:\n%s\ndiffers from the plain one:\n%s", stripped, plainOut)
	}
	for _, l := range strings.Split(plainOut, "\n") {
		if strings.ContainsRune(l, '\x1b') || !utf8.ValidString(l) {
			t.Errorf("plain line %q has escapes", l)
		}
	}
}

func TestThresholds(t *testing.T) {
	for _, tt := range []struct {
		m    v1beta1.CanaryMetric
		want string
	}{
		{v1beta1.CanaryMetric{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99.5}, ">= 99.5%"},
		{v1beta1.CanaryMetric{Name: v1beta1.MetricRequestDuration, Threshold: 500}, "<= 500ms"},
		{v1beta1.CanaryMetric{Name: "error-budget", Threshold: 2, TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "t"}}, "<= 2"},
		// A template named like a builtin is judged as a template (rollout/analysis).
		{v1beta1.CanaryMetric{Name: v1beta1.MetricRequestSuccessRate, Threshold: 99, TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "t"}}, "<= 99"},
		{v1beta1.CanaryMetric{Name: v1beta1.MetricRequestDuration, ThresholdRange: &v1beta1.CanaryThresholdRange{Min: float(10), Max: float(250)}}, "10ms .. 250ms"},
		{v1beta1.CanaryMetric{Name: "x", ThresholdRange: &v1beta1.CanaryThresholdRange{Min: float(1)}}, ">= 1"},
		{v1beta1.CanaryMetric{Name: "x", ThresholdRange: &v1beta1.CanaryThresholdRange{Max: float(0.5)}}, "<= 0.5"},
	} {
		if got := thresholdOf(tt.m); got != tt.want {
			t.Errorf("%+v: %q, want %q", tt.m, got, tt.want)
		}
	}
}

func TestWeightBar(t *testing.T) {
	for w, want := range map[int]string{0: "..........   0%", 5: "#.........   5%", 10: "#.........  10%", 50: "#####.....  50%", 100: "########## 100%", 130: "########## 100%"} {
		if got := weightCell(w, false).text; got != want {
			t.Errorf("weight %d: %q, want %q", w, got, want)
		}
	}
}

func TestStatusTableEdges(t *testing.T) {
	fresh := seedCanary("ns", "new")
	fresh.Spec.Analysis = nil
	got := render(t, []v1beta1.Canary{fresh}, tableOptions{now: now})
	if !strings.Contains(got, fmt.Sprintf("new   -      ..........   0%%  0/%d     -         -    -", v1beta1.DefaultThreshold)) {
		t.Errorf("a Canary the loop has not seen yet:\n%s", got)
	}
	c := progressing()
	c.Status.Metrics = append(c.Status.Metrics, v1beta1.MetricStatus{Name: "removed-from-spec", Value: "3", Outcome: v1beta1.MetricNoData})
	c.Status.Conditions = []metav1.Condition{{Type: conditionReady, Status: metav1.ConditionFalse, Reason: "TargetNotFound", Message: "Deployment alice not found"}}
	got = render(t, []v1beta1.Canary{c}, tableOptions{now: now})
	for _, want := range []string{"removed-from-spec     3       -          no data", "  - not ready: Deployment alice not found"} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
}

func TestSummaryLine(t *testing.T) {
	c := progressing()
	want := "apps-a-mesh-a/alice Progressing weight=15% failed=1/5 revision=5f6e7d8c9b " +
		"request-success-rate=99.93%(>= 99% passed) request-duration=612ms(<= 500ms FAILED)"
	if got := summaryLine(&c); got != want {
		t.Errorf("summary\n%s\nwant\n%s", got, want)
	}
	// The age is not in it: a line is printed when something changed, not as time passes.
	c.Status.LastTransitionTime = ago(time.Hour)
	if got := summaryLine(&c); got != want {
		t.Errorf("summary moved with the age: %s", got)
	}
}

// TestNamesAgreeWithTheLoop: the condition and Event reasons ctl reads are the loop's.
func TestNamesAgreeWithTheLoop(t *testing.T) {
	for got, want := range map[string]string{
		conditionPaused:      rollout.ConditionPaused,
		reasonCommand:        rollout.ReasonCommand,
		reasonCommandRefused: rollout.ReasonCommandRefused,
	} {
		if got != want {
			t.Errorf("ctl uses %q, the loop %q", got, want)
		}
	}
}
