package rollout

import (
	"context"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

func TestInitialize(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()

	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseInitialized {
		t.Fatalf("phase %s, want Initialized (%s)", c.Status.Phase, c.Status.Message)
	}
	if !slices.Contains(c.Finalizers, v1beta1.Finalizer) {
		t.Error("finalizer not added")
	}
	if w, ok := e.router.weight("alice"); !ok || w != 0 {
		t.Errorf("route weight %d (found %v), want 0", w, ok)
	}
	if rt := e.router.targets[ns+"/alice"]; rt.Mesh != "mesh-a" || rt.Primary != "alice-primary" || rt.Canary != "alice-canary" || rt.Port != 8080 {
		t.Errorf("route target %+v", rt)
	}
	d := e.target()
	rev := v1beta1.TemplateRevision(&d.Spec.Template)
	if d.Labels[v1beta1.LabelManaged] != "true" || d.Annotations[v1beta1.AnnotationStableRevision] != rev {
		t.Errorf("target labels %v annotations %v, want managed and stable %s", d.Labels, d.Annotations, rev)
	}
	if c.Status.StableRevision != rev {
		t.Errorf("status stable %q, want %q", c.Status.StableRevision, rev)
	}
	wantSelectors := map[string]string{"alice": "alice", "alice-primary": "alice", "alice-canary": "alice-canary"}
	for name, app := range wantSelectors {
		svc := &corev1.Service{}
		if err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, svc); err != nil {
			t.Fatalf("service %s: %v", name, err)
		}
		if svc.Spec.Selector["app"] != app || !metav1.IsControlledBy(svc, c) {
			t.Errorf("service %s selector %v owners %v", name, svc.Spec.Selector, svc.OwnerReferences)
		}
		if svc.Annotations["8080.service.kuma.io/protocol"] != "http" {
			t.Errorf("service %s annotations %v", name, svc.Annotations)
		}
	}
	for _, typ := range []string{ConditionPromoted, ConditionReady} {
		if !meta.IsStatusConditionTrue(c.Status.Conditions, typ) {
			t.Errorf("condition %s not true: %+v", typ, c.Status.Conditions)
		}
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, ConditionBareServices); cond != nil {
		t.Errorf("BareServices %+v without bare services, want none", cond)
	}
	if ev := e.eventsWith(ReasonInitialized); len(ev) != 1 || !strings.Contains(ev[0], "guarding Deployment alice through TrafficRoute ") {
		t.Errorf("events %v, want one Initialized naming the target and the route", e.notes)
	}
	if ev := e.eventsWith(ReasonAcquired); len(ev) != 0 {
		t.Errorf("Acquired events %v: a new Canary says it in its Initialized event", ev)
	}

	// Nothing changed: a further pass writes nothing.
	before := e.writes
	e.reconcileOnce()
	if e.writes != before {
		t.Errorf("idle pass wrote %d times", e.writes-before)
	}
}

// The seed's Canary (interval 30s, stepWeight 5, maxWeight 50): weights 5, 10, ... 50, one
// step per interval, then promotion by unpausing the target, then all traffic to primary.
func TestSeedHappyPath(t *testing.T) {
	// The counters are the process's: other tests' alice counted too.
	checksBefore := seriesValue(t, "coalmine_canary_checks_total", map[string]string{"name": "alice", "namespace": ns, "metric": v1beta1.MetricRequestDuration, "outcome": "Passed"})
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	stable := e.canary().Status.StableRevision

	rev := e.ship("alice:2")
	e.settle()
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryRevision != rev {
		t.Fatalf("after ship: phase %s revision %s, want Progressing %s", c.Status.Phase, c.Status.CanaryRevision, rev)
	}
	canary, ok := e.deployment("alice-canary")
	if !ok {
		t.Fatal("canary deployment not created")
	}
	if canary.Spec.Template.Spec.Containers[0].Image != "alice:2" || canary.Spec.Selector.MatchLabels["app"] != "alice-canary" || *canary.Spec.Replicas != 3 {
		t.Errorf("canary deployment spec %+v", canary.Spec)
	}
	if !metav1.IsControlledBy(canary, c) {
		t.Error("canary deployment not owned by the Canary")
	}
	if !e.target().Spec.Paused {
		t.Error("target not paused during the analysis")
	}

	stepTimes := map[int]time.Duration{}
	for {
		d := e.settle()
		c = e.canary()
		if c.Status.Phase != v1beta1.PhaseProgressing {
			break
		}
		if _, seen := stepTimes[c.Status.CanaryWeight]; !seen {
			stepTimes[c.Status.CanaryWeight] = e.clock.Since(start)
		}
		e.clock.Step(d)
	}
	if c.Status.Phase != v1beta1.PhaseSucceeded {
		t.Fatalf("phase %s (%s), want Succeeded", c.Status.Phase, c.Status.Message)
	}
	want := []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}
	if got := distinct(e.router.history); !slices.Equal(got, want) {
		t.Errorf("weights %v, want %v", got, want)
	}
	for w := 10; w <= 50; w += 5 {
		if gap := stepTimes[w] - stepTimes[w-5]; gap != 30*time.Second {
			t.Errorf("weight %d came %s after %d, want the 30s interval", w, gap, w-5)
		}
	}
	d := e.target()
	if d.Spec.Paused || d.Annotations[v1beta1.AnnotationStableRevision] != rev {
		t.Errorf("target paused=%v stable=%s, want unpaused on %s", d.Spec.Paused, d.Annotations[v1beta1.AnnotationStableRevision], rev)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary deployment not deleted")
	}
	if c.Status.LastPromotedRevision != rev || c.Status.StableRevision != rev || c.Status.CanaryWeight != 0 || stable == rev {
		t.Errorf("status %+v", c.Status)
	}
	if !meta.IsStatusConditionTrue(c.Status.Conditions, ConditionPromoted) {
		t.Error("Promoted not true")
	}
	if n := len(e.eventsWith(ReasonAdvance)); n != 10 {
		t.Errorf("%d Advance events, want 10", n)
	}
	if len(e.eventsWith(ReasonPromoting)) != 1 || len(e.eventsWith(ReasonSucceeded)) != 1 {
		t.Errorf("events %v", e.notes)
	}
	fams := scrape(t)
	if m := series(fams, "coalmine_canary_phase", map[string]string{"name": "alice", "namespace": ns, "phase": string(v1beta1.PhaseSucceeded)}); m.GetGauge().GetValue() != 1 {
		t.Errorf("phase metric %v", m)
	}
	if m := series(fams, "coalmine_canary_phase", map[string]string{"name": "alice", "namespace": ns, "phase": string(v1beta1.PhaseProgressing)}); m != nil {
		t.Error("the phase metric kept a series of a past phase")
	}
	if m := series(fams, "coalmine_canary_weight", map[string]string{"name": "alice", "namespace": ns}); m == nil || m.GetGauge().GetValue() != 0 {
		t.Errorf("weight metric %v", m)
	}
	if got := seriesValue(t, "coalmine_canary_analysis_value", map[string]string{"name": "alice", "namespace": ns, "metric": v1beta1.MetricRequestSuccessRate}); got != 99.9 {
		t.Errorf("analysis value metric %v", got)
	}
	if got := seriesValue(t, "coalmine_canary_checks_total", map[string]string{"name": "alice", "namespace": ns, "metric": v1beta1.MetricRequestDuration, "outcome": "Passed"}) - checksBefore; got != 10 {
		t.Errorf("passed checks %v, want 10", got)
	}
}

// The write budget of the benchmark: a 5-step rollout (stepWeight 10, maxWeight 50), from
// the new revision to Succeeded, in API and route writes (events excluded).
func TestWritesPerRollout(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.StepWeight = 10
	e := newEnv(t, c, targetDeployment())
	e.settle()
	e.writes = 0
	e.ship("alice:2")
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	t.Logf("writes for a 5-step rollout: %d", e.writes)
	if e.writes > 18 {
		t.Errorf("%d writes, budget 18", e.writes)
	}
}

func TestRollbackAtThreshold(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	stable := e.canary().Status.StableRevision
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	bad := e.ship("alice:bad")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))

	c := e.canary()
	if c.Status.FailedChecks != 5 || c.Status.FailedRevision != bad {
		t.Errorf("failedChecks %d failedRevision %s, want 5 and %s", c.Status.FailedChecks, c.Status.FailedRevision, bad)
	}
	for _, want := range []string{"request-success-rate 42.5 < 99", "threshold of 5"} {
		if !strings.Contains(c.Status.Message, want) {
			t.Errorf("message %q lacks %q", c.Status.Message, want)
		}
	}
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Errorf("weight %d after rollback", w)
	}
	if max := slices.Max(e.router.history); max != 5 {
		t.Errorf("weight went up to %d; failed checks must hold the weight at 5", max)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary deployment kept")
	}
	d := e.target()
	if !d.Spec.Paused || v1beta1.TemplateRevision(&d.Spec.Template) != bad || d.Annotations[v1beta1.AnnotationStableRevision] != stable {
		t.Errorf("target paused=%v stable=%s; want paused on the failed template with stable %s", d.Spec.Paused, d.Annotations[v1beta1.AnnotationStableRevision], stable)
	}
	if n := len(e.eventsWith(ReasonFailedCheck)); n != 5 {
		t.Errorf("%d FailedCheck events, want 5", n)
	}
	if ev := e.eventsWith(ReasonRolledBack); len(ev) != 1 || !strings.Contains(ev[0], "42.5") {
		t.Errorf("rollback events %v", ev)
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, ConditionPromoted); cond == nil || cond.Status != metav1.ConditionFalse {
		t.Errorf("Promoted %+v, want False", cond)
	}
	if m := c.Status.Metrics; len(m) != 2 || m[0].Value != "42.5" || m[0].Outcome != v1beta1.MetricFailed {
		t.Errorf("status metrics %+v", m)
	}
}

// Flagger's counting: one failed check per interval whatever failed, cumulative within a
// revision; NoData and Error count, Skipped does not.
func TestFailedCheckCounting(t *testing.T) {
	res := func(o v1beta1.MetricOutcome) []analysis.Result {
		v := 99.9
		if o == v1beta1.MetricNoData || o == v1beta1.MetricError || o == v1beta1.MetricSkipped {
			v = math.NaN()
		}
		return []analysis.Result{{Metric: v1beta1.MetricRequestSuccessRate, Value: v, Outcome: o}}
	}
	tests := []struct {
		name       string
		outcomes   []v1beta1.MetricOutcome
		wantFailed int
		wantWeight int
	}{
		{"all passed advance each interval", []v1beta1.MetricOutcome{"Passed", "Passed"}, 0, 15},
		{"no data counts as failed", []v1beta1.MetricOutcome{"NoData", "Passed"}, 1, 10},
		{"query error counts as failed", []v1beta1.MetricOutcome{"Error", "Error"}, 2, 5},
		{"a step where every metric was skipped is failed", []v1beta1.MetricOutcome{"Skipped", "Skipped"}, 2, 5},
		{"failures are cumulative across passes", []v1beta1.MetricOutcome{"Failed", "Passed", "Failed"}, 2, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			c.Spec.Analysis.Metrics = c.Spec.Analysis.Metrics[:1]
			e := newEnv(t, c, targetDeployment())
			e.settle()
			for _, o := range tt.outcomes {
				e.analyzer.script = append(e.analyzer.script, res(o))
			}
			e.ship("alice:2")
			e.runUntil("first step", weightIs(5))
			for range tt.outcomes {
				e.clock.Step(30 * time.Second)
				e.settle()
			}
			c = e.canary()
			if c.Status.FailedChecks != tt.wantFailed || c.Status.CanaryWeight != tt.wantWeight {
				t.Errorf("failedChecks %d weight %d, want %d and %d", c.Status.FailedChecks, c.Status.CanaryWeight, tt.wantFailed, tt.wantWeight)
			}
			if c.Status.Iterations != len(tt.outcomes) {
				t.Errorf("iterations %d", c.Status.Iterations)
			}
		})
	}
}

func TestNewRevisionMidAnalysis(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	first := e.ship("alice:2")
	e.analyzer.script = [][]analysis.Result{passing(), failingSuccessRate()}
	e.runUntil("weight 10", weightIs(10))
	e.clock.Step(30 * time.Second)
	e.settle()
	if c := e.canary(); c.Status.FailedChecks != 1 || c.Status.CanaryWeight != 10 {
		t.Fatalf("failedChecks %d weight %d before the new revision", c.Status.FailedChecks, c.Status.CanaryWeight)
	}

	second := e.ship("alice:3")
	e.reconcileOnce()
	c := e.canary()
	if c.Status.CanaryRevision != second || c.Status.CanaryWeight != 0 || c.Status.FailedChecks != 0 || c.Status.Iterations != 0 {
		t.Errorf("after new revision: %+v", c.Status)
	}
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Errorf("route weight %d, want back to 0", w)
	}
	canary, _ := e.deployment("alice-canary")
	if img := canary.Spec.Template.Spec.Containers[0].Image; img != "alice:3" {
		t.Errorf("canary image %s, want the newest template", img)
	}
	if ev := e.eventsWith(ReasonRevisionReplace); len(ev) != 1 || !strings.Contains(ev[0], second+" replaces "+first) || !strings.Contains(ev[0], "analysis restarted") {
		t.Errorf("events %v", ev)
	}

	e.runUntil("weight 5 again", weightIs(5))
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if c := e.canary(); c.Status.LastPromotedRevision != second {
		t.Errorf("promoted %s, want %s", c.Status.LastPromotedRevision, second)
	}
	if d := e.target(); d.Spec.Template.Spec.Containers[0].Image != "alice:3" || d.Spec.Paused {
		t.Errorf("target image %s paused %v", d.Spec.Template.Spec.Containers[0].Image, d.Spec.Paused)
	}
}

func TestRevert(t *testing.T) {
	tests := []struct {
		name string
		// setup brings the rollout to the state where the template is reverted.
		setup func(e *env)
	}{
		{"after a rollback", func(e *env) {
			e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
			e.ship("alice:bad")
			e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
		}},
		{"during the analysis", func(e *env) {
			e.ship("alice:2")
			e.runUntil("weight 10", weightIs(10))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, seedCanary(), targetDeployment())
			e.settle()
			stable := e.canary().Status.StableRevision
			tt.setup(e)

			if rev := e.ship("alice:1"); rev != stable {
				t.Fatalf("revert gave revision %s, want stable %s", rev, stable)
			}
			e.settle()
			c := e.canary()
			if c.Status.Phase != v1beta1.PhaseSucceeded || c.Status.FailedRevision != "" {
				t.Errorf("phase %s failedRevision %q, want Succeeded and none", c.Status.Phase, c.Status.FailedRevision)
			}
			if !strings.Contains(c.Status.Message, "nothing rolled") {
				t.Errorf("message %q", c.Status.Message)
			}
			d := e.target()
			if d.Spec.Paused || d.Annotations[v1beta1.AnnotationStableRevision] != stable {
				t.Errorf("target paused=%v stable=%s", d.Spec.Paused, d.Annotations[v1beta1.AnnotationStableRevision])
			}
			if _, ok := e.deployment("alice-canary"); ok {
				t.Error("canary deployment kept")
			}
			if w, _ := e.router.weight("alice"); w != 0 {
				t.Errorf("weight %d", w)
			}
			if ev := e.eventsWith(ReasonReverted); len(ev) != 1 || !strings.Contains(ev[0], "nothing rolled") {
				t.Errorf("events %v", ev)
			}
		})
	}
}

func TestReappliedFailedRevisionDoesNotRestart(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	bad := e.ship("alice:bad")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	calls := e.analyzer.calls

	// A GitOps re-apply of the same template: metadata touched, template unchanged.
	d := e.target()
	d.Annotations["reconcile.fluxcd.io/requestedAt"] = "now"
	if err := e.base.Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	before := e.writes
	e.clock.Step(10 * time.Minute)
	e.settle()
	if c := e.canary(); c.Status.Phase != v1beta1.PhaseFailed || c.Status.CanaryRevision != bad {
		t.Errorf("phase %s revision %s, want still Failed on %s", c.Status.Phase, c.Status.CanaryRevision, bad)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("a canary was started again for the failed revision")
	}
	if e.writes != before || e.analyzer.calls != calls {
		t.Errorf("%d writes and %d analyses for a re-applied failed revision, want none", e.writes-before, e.analyzer.calls-calls)
	}

	// A new revision does start.
	e.analyzer.fail = nil
	fixed := e.ship("alice:fixed")
	e.settle()
	if c := e.canary(); c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryRevision != fixed || c.Status.FailedChecks != 0 {
		t.Errorf("after a new revision: %+v", c.Status)
	}
}

// A controller restarted mid-analysis resumes from the status: same weight until the
// interval since the last step has passed, then the next step.
func TestRestartResumes(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 15", weightIs(15))
	e.clock.Step(10 * time.Second) // the old controller dies 10s into the interval

	old := e.r
	e.r = &Reconciler{Client: old.Client, Recorder: old.Recorder, Clock: e.clock, Analyzer: &scriptedAnalyzer{}, Routers: old.Routers}
	d := e.settle()
	if c := e.canary(); c.Status.CanaryWeight != 15 || c.Status.Phase != v1beta1.PhaseProgressing {
		t.Fatalf("after restart: weight %d phase %s, want 15 Progressing", c.Status.CanaryWeight, c.Status.Phase)
	}
	if d != 20*time.Second {
		t.Errorf("requeue %s, want the 20s left of the interval", d)
	}
	e.clock.Step(d)
	e.settle()
	if c := e.canary(); c.Status.CanaryWeight != 20 {
		t.Errorf("weight %d, want 20", c.Status.CanaryWeight)
	}
	if got := distinct(e.router.history); !slices.Equal(got, []int{0, 5, 10, 15, 20}) {
		t.Errorf("weights %v", got)
	}
}

func TestProgressDeadline(t *testing.T) {
	c := seedCanary()
	c.Spec.ProgressDeadlineSeconds = ptr.To[int32](120)
	e := newEnv(t, c, targetDeployment())
	e.stuck["alice-canary"] = true
	e.settle()
	e.ship("alice:crashloop")
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseProgressing {
		t.Fatalf("phase %s", p)
	}
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	if took := e.clock.Since(start); took < 120*time.Second || took > 150*time.Second {
		t.Errorf("rolled back after %s, want at the 120s deadline", took)
	}
	c = e.canary()
	if !strings.Contains(c.Status.Message, "progress deadline") || e.analyzer.calls != 0 {
		t.Errorf("message %q, %d analyses", c.Status.Message, e.analyzer.calls)
	}
	if slices.Max(e.router.history) != 0 {
		t.Errorf("weights %v: an unready canary must get no traffic", e.router.history)
	}
}

func TestDeleteCanary(t *testing.T) {
	tests := []struct {
		name           string
		deleteServices bool
	}{
		{"services kept", false},
		{"services deleted on request", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			if tt.deleteServices {
				c.Annotations[v1beta1.AnnotationDeleteServices] = "true"
			}
			e := newEnv(t, c, targetDeployment())
			e.settle()
			rev := e.ship("alice:2")
			e.runUntil("weight 10", weightIs(10))

			if err := e.base.Delete(context.Background(), e.canary()); err != nil {
				t.Fatal(err)
			}
			e.settle()
			if err := e.base.Get(context.Background(), e.key, &v1beta1.Canary{}); client.IgnoreNotFound(err) != nil || err == nil {
				t.Fatalf("canary still there (err %v)", err)
			}
			if _, found := e.router.weight("alice"); found {
				t.Error("route not deleted")
			}
			if !slices.Contains(e.router.history[len(e.router.history)-1:], 0) {
				t.Errorf("route not set to primary before deletion: %v", e.router.history)
			}
			if _, ok := e.deployment("alice-canary"); ok {
				t.Error("canary deployment kept")
			}
			d := e.target()
			if d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" || d.Annotations[v1beta1.AnnotationRevision] != "" {
				t.Errorf("target paused=%v labels %v annotations %v", d.Spec.Paused, d.Labels, d.Annotations)
			}
			if d.Annotations[v1beta1.AnnotationStableRevision] != rev {
				t.Errorf("stable revision %s, want the current template %s", d.Annotations[v1beta1.AnnotationStableRevision], rev)
			}
			for _, name := range []string{"alice", "alice-primary", "alice-canary"} {
				svc := &corev1.Service{}
				err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, svc)
				switch {
				case tt.deleteServices && err == nil:
					t.Errorf("service %s kept", name)
				case !tt.deleteServices && err != nil:
					t.Errorf("service %s: %v", name, err)
				case !tt.deleteServices && len(svc.OwnerReferences) != 0:
					t.Errorf("service %s still owned (the garbage collector would delete it): %v", name, svc.OwnerReferences)
				}
			}
		})
	}
}

func TestSkipAnalysis(t *testing.T) {
	c := seedCanary()
	c.Spec.SkipAnalysis = true
	e := newEnv(t, c, targetDeployment())
	e.settle()
	rev := e.ship("alice:2")
	e.settle()
	c = e.canary()
	if c.Status.Phase != v1beta1.PhaseSucceeded || c.Status.LastPromotedRevision != rev {
		t.Errorf("phase %s promoted %q", c.Status.Phase, c.Status.LastPromotedRevision)
	}
	if e.analyzer.calls != 0 || slices.Max(e.router.history) != 0 {
		t.Errorf("%d analyses, weights %v", e.analyzer.calls, e.router.history)
	}
}

func TestSuspend(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	c := e.canary()
	c.Spec.Suspend = true
	if err := e.base.Update(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	e.settle()
	calls := e.analyzer.calls
	for range 5 {
		e.clock.Step(time.Minute)
		e.settle()
	}
	if c := e.canary(); c.Status.CanaryWeight != 10 || c.Status.Phase != v1beta1.PhaseProgressing || e.analyzer.calls != calls {
		t.Errorf("suspended canary moved: weight %d phase %s analyses %d", c.Status.CanaryWeight, c.Status.Phase, e.analyzer.calls-calls)
	}
}

func TestStepWeightPromotion(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.StepWeight = 25
	c.Spec.Analysis.StepWeightPromotion = 20
	e := newEnv(t, c, targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("Finalising", phaseIs(v1beta1.PhaseFinalising))
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if got, want := distinct(e.router.history), []int{0, 25, 50, 30, 10, 0}; !slices.Equal(got, want) {
		t.Errorf("weights %v, want %v", got, want)
	}
}

// A Deployment already held mid-change (paused, its template not what its ReplicaSet
// runs) when its Canary is created: the serving ReplicaSet's revision is stable and the
// change is analysed.
func TestInitializeWhileHeld(t *testing.T) {
	d := targetDeployment()
	rs := servingReplicaSet(d)
	d.Spec.Paused = true
	d.Spec.Template.Spec.Containers[0].Image = "alice:2"
	d.Annotations = map[string]string{v1beta1.AnnotationStableRevision: "0123456789"}
	e := newEnv(t, seedCanary(), d, rs)
	e.settle()
	c := e.canary()
	want := v1beta1.TemplateRevision(workload.TemplateWithoutHash(&rs.Spec.Template))
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.StableRevision != want || c.Status.CanaryRevision != v1beta1.TemplateRevision(&d.Spec.Template) {
		t.Errorf("phase %s stable %s canary %s, want Progressing, stable %s", c.Status.Phase, c.Status.StableRevision, c.Status.CanaryRevision, want)
	}
}

func TestServicesAdoptionAndBareServices(t *testing.T) {
	apex := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "alice", Namespace: ns, Annotations: map[string]string{"team": "a"}},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "alice", "old": "x"},
			Ports: []corev1.ServicePort{{Port: 80}}},
	}
	bare := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "alice-legacy", Namespace: ns},
		Spec:       corev1.ServiceSpec{Selector: map[string]string{"app": "alice"}, Ports: []corev1.ServicePort{{Port: 8080}}},
	}
	e := newEnv(t, seedCanary(), targetDeployment(), apex, bare)
	e.settle()
	c := e.canary()
	got := &corev1.Service{}
	if err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "alice"}, got); err != nil {
		t.Fatal(err)
	}
	if !metav1.IsControlledBy(got, c) || len(got.Spec.Selector) != 1 || got.Spec.Ports[0].Port != 8080 || got.Annotations["team"] != "a" {
		t.Errorf("adopted apex %+v", got)
	}
	cond := meta.FindStatusCondition(c.Status.Conditions, ConditionBareServices)
	if cond == nil || cond.Status != metav1.ConditionTrue || !strings.Contains(cond.Message, "alice-legacy") || strings.Contains(cond.Message, "alice-primary") {
		t.Errorf("BareServices %+v", cond)
	}
	if len(e.eventsWith(ReasonAdopted)) != 1 || len(e.eventsWith(ReasonBareServices)) != 1 {
		t.Errorf("events %v", e.notes)
	}

	if err := e.base.Delete(context.Background(), bare); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionBareServices); cond != nil {
		t.Errorf("BareServices %+v after the bare Service went, want none", cond)
	}
}

func TestMeshAndRouteKind(t *testing.T) {
	tests := []struct {
		name        string
		canaryAnn   map[string]string
		nsAnn       map[string]string
		defaultKind string
		wantMesh    string
		wantKind    string
	}{
		{"canary annotation wins", map[string]string{v1beta1.AnnotationMesh: "mesh-a"}, map[string]string{v1beta1.AnnotationMesh: "mesh-b"}, "", "mesh-a", v1beta1.RouteKindTrafficRoute},
		{"namespace annotation next", nil, map[string]string{v1beta1.AnnotationMesh: "mesh-b"}, "", "mesh-b", v1beta1.RouteKindTrafficRoute},
		{"default mesh last", nil, nil, "", "default", v1beta1.RouteKindTrafficRoute},
		{"route kind from the canary", map[string]string{v1beta1.AnnotationRouteKind: v1beta1.RouteKindMeshHTTPRoute}, nil, v1beta1.RouteKindTrafficRoute, "default", v1beta1.RouteKindMeshHTTPRoute},
		{"route kind default", nil, nil, v1beta1.RouteKindMeshHTTPRoute, "default", v1beta1.RouteKindMeshHTTPRoute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			c.Annotations = tt.canaryAnn
			e := newEnv(t, c, targetDeployment())
			n := &corev1.Namespace{}
			if err := e.base.Get(context.Background(), client.ObjectKey{Name: ns}, n); err != nil {
				t.Fatal(err)
			}
			n.Annotations = tt.nsAnn
			if err := e.base.Update(context.Background(), n); err != nil {
				t.Fatal(err)
			}
			routers := map[string]*fakeRouter{v1beta1.RouteKindTrafficRoute: newFakeRouter(), v1beta1.RouteKindMeshHTTPRoute: newFakeRouter()}
			e.r.Routers = map[string]router.Router{}
			for k, r := range routers {
				e.r.Routers[k] = r
			}
			e.r.DefaultRouteKind = tt.defaultKind
			e.settle()
			for kind, r := range routers {
				rt, used := r.targets[ns+"/alice"]
				if used != (kind == tt.wantKind) {
					t.Errorf("router %s used=%v", kind, used)
				}
				if used && rt.Mesh != tt.wantMesh {
					t.Errorf("mesh %q, want %q", rt.Mesh, tt.wantMesh)
				}
			}
		})
	}
}

func TestMissingTargetAndUnknownRouteKind(t *testing.T) {
	tests := []struct {
		name       string
		annotation string
		wantReason string
	}{
		{"target missing", "", "TargetNotFound"},
		{"unknown route kind", "Gateway", "UnknownRouteKind"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			var objs []client.Object
			objs = append(objs, c)
			if tt.wantReason != "TargetNotFound" {
				objs = append(objs, targetDeployment())
			}
			if tt.annotation != "" {
				c.Annotations[v1beta1.AnnotationRouteKind] = tt.annotation
			}
			e := newEnv(t, objs...)
			e.settle()
			cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionReady)
			if cond == nil || cond.Status != metav1.ConditionFalse || cond.Reason != tt.wantReason {
				t.Errorf("Ready %+v, want False/%s", cond, tt.wantReason)
			}
			if len(e.router.history) != 0 {
				t.Errorf("route written: %v", e.router.history)
			}
		})
	}
}

// An update that bypassed the webhook (not paused) is held on sight and analysed.
func TestUnguardedChangeIsPaused(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	d := e.target()
	d.Spec.Template.Spec.Containers[0].Image = "alice:2"
	bumpGeneration(context.Background(), e.base, d)
	if err := e.base.Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if !e.target().Spec.Paused || e.phase() != v1beta1.PhaseProgressing {
		t.Errorf("paused=%v phase=%s", e.target().Spec.Paused, e.phase())
	}
	if len(e.eventsWith(ReasonUnguarded)) != 1 {
		t.Errorf("events %v", e.notes)
	}
}

// seriesValue is the value of a gauge or counter series on /metrics, 0 if it has none.
func seriesValue(t *testing.T, family string, labels map[string]string) float64 {
	t.Helper()
	m := series(scrape(t), family, labels)
	switch {
	case m == nil:
		return 0
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	case m.Counter != nil:
		return m.Counter.GetValue()
	}
	t.Fatalf("%s%v is neither gauge nor counter", family, labels)
	return 0
}

// atWeight10WithAStaleCopy runs the seed's rollout to weight 10 and returns the Canary as
// it was at weight 5: what a cache behind the loop's last write still shows.
func atWeight10WithAStaleCopy(t *testing.T) (*env, *v1beta1.Canary) {
	t.Helper()
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 5", weightIs(5))
	stale := e.canary()
	e.clock.Step(30 * time.Second)
	e.settle()
	if w := e.canary().Status.CanaryWeight; w != 10 {
		t.Fatalf("weight %d", w)
	}
	return e, stale
}

// A pass that reads a Canary older than the stored one (the cache lags behind the loop's
// own last write) loses the status write and leaves no trace: no events, no double step,
// no extra failed check.
func TestStaleCacheReadLeavesNoTrace(t *testing.T) {
	e, stale := atWeight10WithAStaleCopy(t)
	notes := len(e.notes)

	e.staleCanary, e.staleReads = stale, 2
	res := e.reconcileOnce()
	if res.RequeueAfter != cacheLagSafetyNet {
		t.Errorf("requeue %s, want the wait for our write's event, bounded by the safety net", res.RequeueAfter)
	}
	c := e.canary()
	if c.Status.CanaryWeight != 10 || c.Status.Iterations != 1 || c.Status.FailedChecks != 0 {
		t.Errorf("status changed by a stale pass: %+v", c.Status)
	}
	if w, _ := e.router.weight("alice"); w != 10 {
		t.Errorf("route weight %d", w)
	}
	if len(e.notes) != notes {
		t.Errorf("stale pass emitted %v", e.notes[notes:])
	}
}

// TestPassWokenByItsOwnWriteGoesOn: a pass that finds the cache behind the loop's last
// Canary write waits in place for that write's watch event, then does its step: one pass
// where there were two (make bench, N=200: a quarter of all passes), and the event starts
// no other.
func TestPassWokenByItsOwnWriteGoesOn(t *testing.T) {
	e, stale := atWeight10WithAStaleCopy(t)
	e.clock.Step(30 * time.Second) // the next step is due

	// The wait outlasts the test; a wake-up that never comes fails it when the pass's
	// context ends (reconcile: context deadline exceeded).
	e.r.ownWriteWait = time.Hour
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	startsPass := make(chan bool, 1)
	e.staleCanary, e.staleReads = stale, 2
	e.afterStaleReads = func() {
		fresh := e.canary()
		go func() {
			startsPass <- e.r.ownWriteArrived().Update(event.UpdateEvent{ObjectOld: stale, ObjectNew: fresh})
		}()
	}
	if res := e.reconcileWithin(ctx); res.RequeueAfter == cacheLagSafetyNet {
		t.Fatal("the pass gave up waiting for its own write although the write's event came")
	}
	if <-startsPass {
		t.Error("the write's event started another pass besides the one it woke")
	}
	if w := e.canary().Status.CanaryWeight; w != 15 {
		t.Errorf("weight %d after the woken pass, want the next step's 15", w)
	}
}

// TestAcquiredPastInitialization: a Canary whose status records no ownership (written by
// an older coalmine) acquires its target in place and says so in an Acquired event.
func TestAcquiredPastInitialization(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.editCanaryStatus(func(st *v1beta1.CanaryStatus) { st.Ownership = nil })
	e.settle()
	c := e.canary()
	if c.Status.Ownership == nil || c.Status.Phase != v1beta1.PhaseInitialized {
		t.Fatalf("phase %s ownership %+v, want Initialized with the target acquired", c.Status.Phase, c.Status.Ownership)
	}
	if ev := e.eventsWith(ReasonAcquired); len(ev) != 1 || !strings.Contains(ev[0], "Guarding Deployment alice through TrafficRoute ") {
		t.Errorf("Acquired events %v, want one", ev)
	}
}

func TestDescribeFailedCheck(t *testing.T) {
	c := seedCanary()
	c.Spec.Analysis.Metrics = append(c.Spec.Analysis.Metrics, v1beta1.CanaryMetric{
		Name: "error-budget", TemplateRef: &v1beta1.CrossNamespaceObjectReference{Name: "budget"},
		ThresholdRange: &v1beta1.CanaryThresholdRange{Min: ptr.To(1.0)},
	})
	tests := []struct {
		name string
		res  analysis.Result
		want string
	}{
		{"failed value: the analyzer's message", analysis.Result{Metric: "request-success-rate", Value: 87.5, Outcome: v1beta1.MetricFailed, Message: "request-success-rate 87.5 < 99"}, "request-success-rate 87.5 < 99"},
		{"failed value without message", analysis.Result{Metric: "request-duration", Value: 742, Outcome: v1beta1.MetricFailed}, "request-duration = 742 (threshold <= 500)"},
		{"no data", analysis.Result{Metric: "request-success-rate", Value: math.NaN(), Outcome: v1beta1.MetricNoData, Message: "no values found"}, "request-success-rate: no data (threshold >= 99): no values found"},
		{"query error with a range", analysis.Result{Metric: "error-budget", Value: math.NaN(), Outcome: v1beta1.MetricError, Message: "connection refused"}, "error-budget: query error (threshold [1, +inf]): connection refused"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(c, tt.res); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// The Deployment went first (an opt-in Canary is garbage collected after its Deployment):
// the finalizer still removes the route and lets the Canary go.
func TestDeleteCanaryAfterItsDeployment(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 5", weightIs(5))
	if err := e.base.Delete(context.Background(), e.target()); err != nil {
		t.Fatal(err)
	}
	if err := e.base.Delete(context.Background(), e.canary()); err != nil {
		t.Fatal(err)
	}
	e.settle()
	if err := e.base.Get(context.Background(), e.key, &v1beta1.Canary{}); err == nil {
		t.Fatal("canary still there")
	}
	if _, found := e.router.weight("alice"); found {
		t.Error("route not deleted")
	}
}
