package rollout

// The scenarios of issue 10 ("a progression loop that never rolls a revision unanalysed
// and never loses a decision"), one test each, on the fake API server of env_test.go.

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// as runs f with the env pointed at the Canary name (reconcileOnce, settle, canary).
func (e *env) as(name string, f func()) {
	e.t.Helper()
	old := e.key
	e.key = types.NamespacedName{Namespace: ns, Name: name}
	defer func() { e.key = old }()
	f()
}

// exists reports whether the Canary of the env's key is still stored.
func (e *env) exists() bool {
	e.t.Helper()
	err := e.base.Get(context.Background(), e.key, &v1beta1.Canary{})
	if client.IgnoreNotFound(err) != nil {
		e.t.Fatal(err)
	}
	return err == nil
}

// deleteCanary deletes the env's Canary and returns its deletionTimestamp (zero when it
// went at once, having no finalizer).
func (e *env) deleteCanary() time.Time {
	e.t.Helper()
	if err := e.base.Delete(context.Background(), e.canary()); err != nil {
		e.t.Fatal(err)
	}
	c := &v1beta1.Canary{}
	if err := e.base.Get(context.Background(), e.key, c); err != nil {
		return time.Time{}
	}
	return c.DeletionTimestamp.Time
}

func (e *env) service(name string) (*corev1.Service, bool) {
	e.t.Helper()
	svc := &corev1.Service{}
	err := e.base.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, svc)
	if client.IgnoreNotFound(err) != nil {
		e.t.Fatal(err)
	}
	return svc, err == nil
}

// editCanaryStatus changes the stored Canary's status, as an older coalmine or a lost
// write would have left it.
func (e *env) editCanaryStatus(f func(st *v1beta1.CanaryStatus)) {
	e.t.Helper()
	c := e.canary()
	f(&c.Status)
	if err := e.base.Status().Update(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
}

// setDeploymentStatus overwrites a Deployment's status (kube leaves a stuck one's
// replica counts alone).
func (e *env) setDeploymentStatus(name string, f func(st *appsv1.DeploymentStatus)) {
	e.t.Helper()
	d, ok := e.deployment(name)
	if !ok {
		e.t.Fatalf("deployment %s missing", name)
	}
	f(&d.Status)
	if err := e.base.Status().Update(context.Background(), d); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) updateNamespace(f func(n *corev1.Namespace)) {
	e.t.Helper()
	n := &corev1.Namespace{}
	if err := e.base.Get(context.Background(), client.ObjectKey{Name: ns}, n); err != nil {
		e.t.Fatal(err)
	}
	f(n)
	if err := e.base.Update(context.Background(), n); err != nil {
		e.t.Fatal(err)
	}
}

func wantReady(t *testing.T, c *v1beta1.Canary, status metav1.ConditionStatus, reason string, contains ...string) {
	t.Helper()
	cond := meta.FindStatusCondition(c.Status.Conditions, ConditionReady)
	if cond == nil || cond.Status != status || cond.Reason != reason {
		t.Errorf("Ready %+v, want %s/%s", cond, status, reason)
		return
	}
	for _, s := range contains {
		if !strings.Contains(cond.Message, s) {
			t.Errorf("Ready message %q lacks %q", cond.Message, s)
		}
	}
}

// namedCanary is the seed Canary under another name, created at created, with a UID
// (the fake API server sets none, and ownership compares UIDs).
func namedCanary(name string, created time.Time) *v1beta1.Canary {
	c := seedCanary()
	c.Name = name
	c.UID = types.UID(name + "-uid")
	c.CreationTimestamp = metav1.NewTime(created)
	return c
}

func rvAtMost(t *testing.T, a, b string) bool {
	t.Helper()
	x, err1 := strconv.ParseUint(a, 10, 64)
	y, err2 := strconv.ParseUint(b, 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("resourceVersions %q %q", a, b)
	}
	return x <= y
}

var wantSeedWeights = []int{0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 50, 0}

// Scenario 1: a duplicate Canary (same Deployment, same apex name, created later) never
// acquires, so deleting it cannot un-guard the real one; when the real one goes while a
// successor waits, the target stays held and the successor carries on.
func TestSafety01DuplicateCanaryDeletionKeepsGuard(t *testing.T) {
	t.Run("duplicate deleted", func(t *testing.T) {
		e := newEnv(t, namedCanary("alice", start.Add(-time.Hour)), namedCanary("alice-dup", start), targetDeployment())
		e.settle()
		stable := e.canary().Status.StableRevision
		rev := e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		writes := e.router.writes

		e.as("alice-dup", func() {
			for range 3 {
				e.settle()
				e.clock.Step(30 * time.Second)
			}
			dup := e.canary()
			if dup.Status.Ownership != nil || slices.Contains(dup.Finalizers, v1beta1.Finalizer) {
				t.Errorf("duplicate acquired: ownership %+v finalizers %v", dup.Status.Ownership, dup.Finalizers)
			}
			wantReady(t, dup, metav1.ConditionFalse, "DuplicateTarget", "Canary alice")
			if e.router.writes != writes {
				t.Errorf("the duplicate wrote the route: %v", e.router.history)
			}
			if gone := e.deleteCanary(); !gone.IsZero() || e.exists() {
				t.Fatal("the duplicate, without a finalizer, should go at once")
			}
			e.settle()
		})

		d := e.target()
		if !d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "true" || d.Annotations[v1beta1.AnnotationStableRevision] != stable || d.Annotations[v1beta1.AnnotationRevision] != rev {
			t.Errorf("after the duplicate went: target paused=%v labels %v annotations %v, want held on %s", d.Spec.Paused, d.Labels, d.Annotations, rev)
		}
		c := e.canary()
		for _, name := range []string{"alice", "alice-primary", "alice-canary"} {
			if svc, ok := e.service(name); !ok || !metav1.IsControlledBy(svc, c) {
				t.Errorf("service %s (found %v) not the first Canary's after the duplicate went", name, ok)
			}
		}
		if w, _ := e.router.weight("alice"); w != 10 || c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryWeight != 10 {
			t.Errorf("route weight %d, phase %s weight %d: the rollout was disturbed", w, c.Status.Phase, c.Status.CanaryWeight)
		}
		e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
		if got := distinct(e.router.history); !slices.Equal(got, wantSeedWeights) {
			t.Errorf("weights %v, want %v", got, wantSeedWeights)
		}
		if c := e.canary(); c.Status.LastPromotedRevision != rev {
			t.Errorf("promoted %q, want %s", c.Status.LastPromotedRevision, rev)
		}
	})

	t.Run("hand-over to a successor", func(t *testing.T) {
		e := newEnv(t, namedCanary("alice", start.Add(-time.Hour)), namedCanary("alice-next", start), targetDeployment())
		e.settle()
		stable := e.canary().Status.StableRevision
		e.as("alice-next", func() { e.settle() })
		rev := e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))

		e.deleteCanary()
		e.settle()
		if e.exists() {
			t.Fatal("the first Canary is still there")
		}
		if ev := e.eventsWith(ReasonHandedOver); len(ev) != 1 || !strings.Contains(ev[0], "alice-next") {
			t.Errorf("HandedOver events %v", ev)
		}
		d := e.target()
		if !d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "true" || d.Annotations[v1beta1.AnnotationStableRevision] != stable {
			t.Errorf("handed-over target paused=%v labels %v annotations %v, want still held", d.Spec.Paused, d.Labels, d.Annotations)
		}

		e.as("alice-next", func() {
			e.settle()
			next := e.canary()
			if own := next.Status.Ownership; own == nil || own.Target.UID != "alice-uid" || own.UserPaused {
				t.Errorf("successor ownership %+v, want the target acquired, its pause coalmine's", own)
			}
			if !slices.Contains(next.Finalizers, v1beta1.Finalizer) {
				t.Error("successor has no finalizer")
			}
			if next.Status.Phase != v1beta1.PhaseProgressing || next.Status.StableRevision != stable || next.Status.CanaryRevision != rev {
				t.Errorf("successor phase %s stable %s canary %s, want Progressing %s over %s", next.Status.Phase, next.Status.StableRevision, next.Status.CanaryRevision, rev, stable)
			}
			if !e.target().Spec.Paused {
				t.Error("target unpaused during the hand-over")
			}
			e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
			if got := e.canary().Status.LastPromotedRevision; got != rev {
				t.Errorf("successor promoted %q, want %s", got, rev)
			}
		})
	})
}

// Scenario 2: the live template's hash moved (a k8s.io/api bump, a new server default)
// but the template is what the serving ReplicaSet runs: re-stamped, nothing canaried.
func TestSafety02HashDriftRestampsNoCanary(t *testing.T) {
	tests := []struct {
		name  string
		setup func(e *env)
		phase v1beta1.CanaryPhase
	}{
		{"initialized", func(*env) {}, v1beta1.PhaseInitialized},
		{"after a promotion", func(e *env) {
			e.ship("alice:2")
			e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
		}, v1beta1.PhaseSucceeded},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := targetDeployment()
			e := newEnv(t, seedCanary(), d, servingReplicaSet(d))
			e.settle()
			tt.setup(e)
			live := v1beta1.TemplateRevision(&e.target().Spec.Template)
			old := e.driftStable()
			e.settle()

			c := e.canary()
			if c.Status.Phase != tt.phase || c.Status.StableRevision != live {
				t.Errorf("phase %s stable %s, want %s with stable %s", c.Status.Phase, c.Status.StableRevision, tt.phase, live)
			}
			if ev := e.eventsWith(ReasonRestamped); len(ev) != 1 || !strings.Contains(ev[0], old) || !strings.Contains(ev[0], live) {
				t.Errorf("Restamped events %v", ev)
			}
			if _, ok := e.deployment("alice-canary"); ok {
				t.Error("a canary Deployment was created for a hash drift")
			}
			tgt := e.target()
			if tgt.Spec.Paused || tgt.Annotations[v1beta1.AnnotationStableRevision] != live {
				t.Errorf("target paused=%v stable=%s, want unpaused, stable %s", tgt.Spec.Paused, tgt.Annotations[v1beta1.AnnotationStableRevision], live)
			}
			if len(e.eventsWith(ReasonNewRevision)) != len(e.eventsWith(ReasonSucceeded)) {
				t.Errorf("a revision started for the drift: %v", e.eventsWith(ReasonNewRevision))
			}
		})
	}
}

// Scenario 3: a promotion whose rollout never finishes ends at the target's
// progressDeadlineSeconds, with traffic back on primary and the target held again.
func TestSafety03PromotionTimesOut(t *testing.T) {
	d := targetDeployment()
	d.Spec.ProgressDeadlineSeconds = ptr.To[int32](60)
	e := newEnv(t, seedCanary(), d)
	e.settle()
	stable := e.canary().Status.StableRevision
	e.stuck["alice"] = true
	rev := e.ship("alice:2")
	// The deployment controller would report the new template's rollout as started, not done.
	e.setDeploymentStatus("alice", func(st *appsv1.DeploymentStatus) { st.UpdatedReplicas = 1 })
	e.runUntil("Promoting", phaseIs(v1beta1.PhasePromoting))
	promoted := e.clock.Now()
	if tgt := e.target(); tgt.Spec.Paused {
		t.Fatal("target still paused while promoting")
	}

	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	if took := e.clock.Since(promoted); took < 60*time.Second || took > 61*time.Second {
		t.Errorf("promotion failed %s after it started, want at the 60s deadline", took)
	}
	c := e.canary()
	if c.Status.FailedRevision != rev || !strings.Contains(c.Status.Message, "promotion failed") || !strings.Contains(c.Status.Message, "kubectl rollout restart/undo") {
		t.Errorf("status failed %s message %q", c.Status.FailedRevision, c.Status.Message)
	}
	if ev := e.eventsWith(ReasonPromotionFailed); len(ev) != 1 || !strings.HasPrefix(ev[0], corev1.EventTypeWarning) || !strings.Contains(ev[0], "progress deadline of 1m0s") {
		t.Errorf("PromotionFailed events %v", ev)
	}
	if cond := meta.FindStatusCondition(c.Status.Conditions, ConditionPromoted); cond == nil || cond.Status != metav1.ConditionFalse {
		t.Errorf("Promoted %+v, want False", cond)
	}
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Errorf("route weight %d, want 0", w)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary Deployment kept")
	}
	tgt := e.target()
	if !tgt.Spec.Paused || tgt.Annotations[v1beta1.AnnotationStableRevision] != stable || tgt.Annotations[v1beta1.AnnotationRevision] != rev {
		t.Errorf("target paused=%v annotations %v, want paused, stable back to %s", tgt.Spec.Paused, tgt.Annotations, stable)
	}
}

// Scenario 4: a control plane that refuses every route deletion holds the finalizer for
// a bounded time only; the target is given back first.
func TestSafety04DeletionBoundedWhenControlPlaneUnreachable(t *testing.T) {
	t.Run("bounded", func(t *testing.T) {
		e := newEnv(t, seedCanary(), targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		e.router.deleteErr = errors.New("dial tcp 10.0.0.1:5681: connect: connection refused")

		deleted := e.deleteCanary()
		e.clock.SetTime(deleted) // the fake API server stamps the deletion with the wall clock
		e.reconcileOnce()
		d := e.target()
		if d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" || d.Annotations[v1beta1.AnnotationRevision] != "" {
			t.Errorf("after the first finalize pass: target paused=%v labels %v annotations %v, want restored", d.Spec.Paused, d.Labels, d.Annotations)
		}
		if _, ok := e.deployment("alice-canary"); ok {
			t.Error("canary Deployment kept")
		}
		if w, found := e.router.weight("alice"); !found || w != 0 {
			t.Errorf("route weight %d (found %v), want set to primary while it cannot be deleted", w, found)
		}
		for _, at := range []time.Duration{0, time.Minute, 119 * time.Second} {
			e.clock.SetTime(deleted.Add(at))
			e.settle()
			c := e.canary()
			if !slices.Contains(c.Finalizers, v1beta1.Finalizer) {
				t.Fatalf("finalizer gone %s after the deletion, want kept for 2m", at)
			}
			wantReady(t, c, metav1.ConditionFalse, "RouteCleanupPending", "connection refused", v1beta1.AnnotationSkipCleanup)
		}
		if n := len(e.eventsWith(ReasonRouteLeftOver)); n != 0 {
			t.Errorf("%d RouteLeftBehind events before the deadline", n)
		}

		e.clock.SetTime(deleted.Add(2 * time.Minute))
		e.settle()
		if e.exists() {
			t.Fatal("Canary still there 2m after its deletion")
		}
		if ev := e.eventsWith(ReasonRouteLeftOver); len(ev) != 1 || !strings.HasPrefix(ev[0], corev1.EventTypeWarning) || !strings.Contains(ev[0], "connection refused") {
			t.Errorf("RouteLeftBehind events %v", ev)
		}
	})

	t.Run("skip-route-cleanup", func(t *testing.T) {
		c := seedCanary()
		c.Annotations[v1beta1.AnnotationSkipCleanup] = "true"
		e := newEnv(t, c, targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		e.router.deleteErr = errors.New("the server could not find the requested resource")

		e.clock.SetTime(e.deleteCanary())
		e.reconcileOnce()
		if e.exists() {
			t.Fatal("Canary with skip-route-cleanup still there after one pass")
		}
		if d := e.target(); d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" {
			t.Errorf("target paused=%v labels %v, want restored", d.Spec.Paused, d.Labels)
		}
		if n := len(e.eventsWith(ReasonRouteLeftOver)); n != 0 {
			t.Errorf("%d RouteLeftBehind events, want none when skipped on request", n)
		}
	})
}

// Scenario 5: a pass that reads the Canary as it was before the loop's own rollback
// write must not act on it.
func TestSafety05StaleReadAfterRollbackDoesNotResurrect(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	e.ship("alice:bad")
	e.runUntil("4 failed checks", func(c *v1beta1.Canary) bool { return c.Status.FailedChecks == 4 })
	stale := e.canary()
	if stale.Status.Phase != v1beta1.PhaseProgressing {
		t.Fatalf("phase %s before the rollback", stale.Status.Phase)
	}
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	if _, ok := e.deployment("alice-canary"); ok {
		t.Fatal("canary Deployment kept after the rollback")
	}
	notes, history, calls := len(e.notes), len(e.router.history), e.analyzer.calls

	// The cache lags on the pass's read and on its second look: it waits for the event of
	// its own write (ownWriteArrived), with a safety net.
	e.staleCanary, e.staleReads = stale, 2
	if res := e.reconcileOnce(); res.RequeueAfter != cacheLagSafetyNet {
		t.Errorf("requeue %s, want the cache-lag safety net", res.RequeueAfter)
	}
	if !e.r.memo.arrived(e.key, e.canary().ResourceVersion) {
		t.Error("the update carrying the loop's own write would not start a pass")
	}
	// It lags on the first read only: the second look sees the write, the pass goes on.
	e.staleCanary, e.staleReads = stale, 1
	e.reconcileOnce()
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("the stale pass re-created the canary Deployment")
	}
	if w, _ := e.router.weight("alice"); w != 0 || len(e.router.history) != history {
		t.Errorf("the stale pass wrote the route: weight %d history %v", w, e.router.history)
	}
	if len(e.notes) != notes || e.analyzer.calls != calls {
		t.Errorf("the stale pass emitted %v and ran %d analyses", e.notes[notes:], e.analyzer.calls-calls)
	}
	if c := e.canary(); c.Status.Phase != v1beta1.PhaseFailed {
		t.Errorf("phase %s after the stale pass", c.Status.Phase)
	}
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseFailed {
		t.Errorf("phase %s once the cache caught up", p)
	}
}

// Scenario 7: a canary that loses readiness at a weight gets no traffic from that pass
// on, and each interval it stays unready is a failed check.
func TestSafety07UnreadyCanaryLosesWeight(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))

	calls := e.analyzer.calls
	e.stuck["alice-canary"] = true
	e.setDeploymentStatus("alice-canary", func(st *appsv1.DeploymentStatus) { st.ReadyReplicas, st.AvailableReplicas = 0, 0 })
	e.reconcileOnce()
	c := e.canary()
	if w, _ := e.router.weight("alice"); w != 0 || c.Status.CanaryWeight != 0 || c.Status.Phase != v1beta1.PhaseProgressing {
		t.Errorf("same pass: route weight %d, status weight %d phase %s, want 0 and still Progressing", w, c.Status.CanaryWeight, c.Status.Phase)
	}
	if c.Status.FailedChecks != 0 {
		t.Errorf("failed checks %d before an interval passed", c.Status.FailedChecks)
	}
	if ev := e.eventsWith(ReasonCanaryLost); len(ev) != 1 || !strings.HasPrefix(ev[0], corev1.EventTypeWarning) {
		t.Errorf("CanaryNotReady events %v", ev)
	}

	for i := 1; i <= 5; i++ {
		e.clock.Step(30 * time.Second)
		e.settle()
		c = e.canary()
		if i < 5 && (c.Status.FailedChecks != i || c.Status.Phase != v1beta1.PhaseProgressing) {
			t.Fatalf("interval %d unready: failed checks %d phase %s, want %d, Progressing", i, c.Status.FailedChecks, c.Status.Phase, i)
		}
		if w, _ := e.router.weight("alice"); w != 0 {
			t.Fatalf("interval %d: route weight %d", i, w)
		}
	}
	if c.Status.Phase != v1beta1.PhaseFailed || c.Status.FailedChecks != 5 || !strings.Contains(c.Status.Message, "not ready") {
		t.Errorf("at the threshold: phase %s failed %d message %q", c.Status.Phase, c.Status.FailedChecks, c.Status.Message)
	}
	if n := len(e.eventsWith(ReasonFailedCheck)); n != 5 {
		t.Errorf("%d FailedCheck events, want 5", n)
	}
	if e.analyzer.calls != calls {
		t.Errorf("%d analyses of an unready canary", e.analyzer.calls-calls)
	}
}

// Scenario 8: with onNoData: skip, a step needs at least one passed metric.
func TestSafety08SkipNeedsAPassedCheck(t *testing.T) {
	skipped := func(m string) analysis.Result {
		return analysis.Result{Metric: m, Value: math.NaN(), Outcome: v1beta1.MetricSkipped, Message: "no data, skipped"}
	}
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.analyzer.script = [][]analysis.Result{
		{skipped(v1beta1.MetricRequestSuccessRate), {Metric: v1beta1.MetricRequestDuration, Value: 120, Outcome: v1beta1.MetricPassed}},
		{skipped(v1beta1.MetricRequestSuccessRate), skipped(v1beta1.MetricRequestDuration)},
	}
	e.ship("alice:2")
	e.runUntil("weight 5", weightIs(5))

	e.clock.Step(30 * time.Second)
	e.settle()
	if c := e.canary(); c.Status.CanaryWeight != 10 || c.Status.FailedChecks != 0 {
		t.Errorf("one skipped, one passed: weight %d failed %d, want 10 and 0", c.Status.CanaryWeight, c.Status.FailedChecks)
	}
	e.clock.Step(30 * time.Second)
	e.settle()
	c := e.canary()
	if c.Status.CanaryWeight != 10 || c.Status.FailedChecks != 1 {
		t.Errorf("both skipped: weight %d failed %d, want 10 and 1", c.Status.CanaryWeight, c.Status.FailedChecks)
	}
	if ev := e.eventsWith(ReasonFailedCheck); len(ev) != 1 || !strings.Contains(ev[0], "no metric passed") {
		t.Errorf("FailedCheck events %v", ev)
	}
	if !strings.Contains(c.Status.Message, "1 of 5 failed checks") {
		t.Errorf("message %q", c.Status.Message)
	}
}

// Scenario 9: a route of the apex's name that is not coalmine's is never written, and the
// Canary that would need it acquires nothing.
func TestSafety09ForeignRouteIsNeverWritten(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.router.foreign[ns+"/alice"] = true
	before := e.target()
	for range 3 {
		e.settle()
		e.clock.Step(30 * time.Second)
	}
	c := e.canary()
	wantReady(t, c, metav1.ConditionFalse, "RouteConflict", "not coalmine's")
	if slices.Contains(c.Finalizers, v1beta1.Finalizer) || c.Status.Ownership != nil {
		t.Errorf("finalizers %v ownership %+v, want none", c.Finalizers, c.Status.Ownership)
	}
	if e.router.writes != 0 || len(e.router.history) != 0 {
		t.Errorf("route written: %v", e.router.history)
	}
	after := e.target()
	delete(after.Annotations, "deployment.kubernetes.io/revision") // the deployment controller's
	delete(before.Annotations, "deployment.kubernetes.io/revision")
	if after.Spec.Paused || !equality.Semantic.DeepEqual(after.Labels, before.Labels) || !equality.Semantic.DeepEqual(after.Annotations, before.Annotations) {
		t.Errorf("target touched: paused=%v labels %v annotations %v", after.Spec.Paused, after.Labels, after.Annotations)
	}
	for _, name := range []string{"alice", "alice-primary", "alice-canary"} {
		if _, ok := e.service(name); ok {
			t.Errorf("service %s created", name)
		}
	}
	// Deleting it leaves nothing to undo.
	e.deleteCanary()
	e.settle()
	if e.exists() {
		t.Error("Canary without a finalizer still there")
	}
	if e.router.writes != 0 {
		t.Errorf("route written on deletion: %v", e.router.history)
	}
}

// Scenario 10: a revision waiting behind a closed confirm-rollout gate, reverted to the
// stable template, ends the wait.
func TestSafety10RevertWhileWaitingEndsClean(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "approval", Type: v1beta1.ConfirmRolloutHook, URL: "http://gate/"}))
	stable := e.canary().Status.StableRevision
	h.set("approval", errClosed)
	rev := e.ship("alice:2")
	e.runUntil("Waiting", phaseIs(v1beta1.PhaseWaiting))
	if !e.target().Spec.Paused {
		t.Fatal("target not held while waiting")
	}

	if got := e.ship("alice:1"); got != stable {
		t.Fatalf("revert gave %s, want stable %s", got, stable)
	}
	e.settle()
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseSucceeded || !strings.Contains(c.Status.Message, "nothing rolled") {
		t.Errorf("phase %s message %q, want Succeeded", c.Status.Phase, c.Status.Message)
	}
	d := e.target()
	if d.Spec.Paused || d.Annotations[v1beta1.AnnotationStableRevision] != stable {
		t.Errorf("target paused=%v stable %s, want unpaused on %s", d.Spec.Paused, d.Annotations[v1beta1.AnnotationStableRevision], stable)
	}
	if ev := e.eventsWith(ReasonReverted); len(ev) != 1 || !strings.Contains(ev[0], rev) {
		t.Errorf("Reverted events %v", ev)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary Deployment created")
	}
	// Nothing is waiting any more: time passes without a gate call or a change.
	calls := len(h.callsOf("approval"))
	e.clock.Step(5 * time.Minute)
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseSucceeded || len(h.callsOf("approval")) != calls {
		t.Errorf("phase %s, %d more gate calls after the revert", p, len(h.callsOf("approval"))-calls)
	}
}

// Scenario 11: spec.service.name changed past the webhook: the old route and the
// primary/canary Services go, the old apex is released, the new ones are recorded.
func TestSafety11RenameCleansUpOldObjects(t *testing.T) {
	for _, midAnalysis := range []bool{false, true} {
		t.Run(map[bool]string{false: "initialized", true: "mid-analysis"}[midAnalysis], func(t *testing.T) {
			c := seedCanary()
			c.UID = "alice-canary-uid"
			e := newEnv(t, c, targetDeployment())
			e.settle()
			if midAnalysis {
				e.ship("alice:2")
				e.runUntil("weight 10", weightIs(10))
			}
			c = e.canary()
			c.Spec.Service.Name = "bob"
			if err := e.base.Update(context.Background(), c); err != nil {
				t.Fatal(err)
			}
			e.settle()

			c = e.canary()
			if _, found := e.router.weight("alice"); found {
				t.Error("old route alice not deleted")
			}
			wantW := 0
			if midAnalysis {
				wantW = 10
			}
			if w, found := e.router.weight("bob"); !found || w != wantW {
				t.Errorf("new route bob weight %d (found %v), want %d", w, found, wantW)
			}
			for _, name := range []string{"alice-primary", "alice-canary"} {
				if _, ok := e.service(name); ok {
					t.Errorf("old service %s kept", name)
				}
			}
			if svc, ok := e.service("alice"); !ok || len(svc.OwnerReferences) != 0 {
				t.Errorf("old apex alice (found %v) owners %v, want released", ok, svc.OwnerReferences)
			}
			for _, name := range []string{"bob", "bob-primary", "bob-canary"} {
				if svc, ok := e.service(name); !ok || !metav1.IsControlledBy(svc, c) {
					t.Errorf("new service %s (found %v) not the Canary's", name, ok)
				}
			}
			own := c.Status.Ownership
			if own == nil || own.Route == nil || own.Route.Service != "bob" || !strings.HasPrefix(own.Route.Name, "bob") {
				t.Fatalf("ownership %+v, want the route of bob", own)
			}
			var names []string
			for _, s := range own.Services {
				names = append(names, s.Name)
			}
			slices.Sort(names)
			if !slices.Equal(names, []string{"bob", "bob-canary", "bob-primary"}) {
				t.Errorf("recorded services %v", names)
			}
			if n := len(e.eventsWith(ReasonRouteMoved)); n != 1 {
				t.Errorf("%d RouteMoved events: %v", n, e.notes)
			}
			if midAnalysis {
				e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
			}
		})
	}
}

// Scenario 12: a Deployment the user paused with a change that never rolled, no coalmine
// marks at all: the change is analysed, the serving ReplicaSet's revision is stable.
func TestSafety12UserPausedChangeIsAnalysed(t *testing.T) {
	d := targetDeployment()
	rs := servingReplicaSet(d)
	d.Spec.Paused = true
	d.Spec.Template.Spec.Containers[0].Image = "alice:2"
	e := newEnv(t, seedCanary(), d, rs)
	e.settle()
	c := e.canary()
	stable := v1beta1.TemplateRevision(workload.TemplateWithoutHash(&rs.Spec.Template))
	live := v1beta1.TemplateRevision(&d.Spec.Template)
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.StableRevision != stable || c.Status.CanaryRevision != live || c.Status.StableDeploymentRevision != "1" {
		t.Fatalf("phase %s stable %s (rs %s) canary %s, want Progressing, stable %s of %s, canary %s",
			c.Status.Phase, c.Status.StableRevision, c.Status.StableDeploymentRevision, c.Status.CanaryRevision, stable, "revision 1", live)
	}
	if canary, ok := e.deployment("alice-canary"); !ok || canary.Spec.Template.Spec.Containers[0].Image != "alice:2" {
		t.Error("the held change is not on a canary")
	}
	tgt := e.target()
	if !tgt.Spec.Paused || tgt.Annotations[v1beta1.AnnotationStableRevision] != stable || tgt.Annotations[v1beta1.AnnotationRevision] != live {
		t.Errorf("target paused=%v annotations %v", tgt.Spec.Paused, tgt.Annotations)
	}
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if got := e.canary().Status.LastPromotedRevision; got != live {
		t.Errorf("promoted %s, want %s", got, live)
	}
}

// Scenario 13: a namespace outside the webhook's namespaceSelector is a condition naming
// the label, and the loop still holds what slips through.
func TestSafety13NamespaceOutOfScopeIsACondition(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.updateNamespace(func(n *corev1.Namespace) { delete(n.Labels, v1beta1.LabelSidecarInjection) })
	e.settle()
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseInitialized {
		t.Fatalf("phase %s", c.Status.Phase)
	}
	wantReady(t, c, metav1.ConditionFalse, "NamespaceNotInScope", v1beta1.LabelSidecarInjection+"=enabled", ns)

	d := e.target()
	d.Spec.Template.Spec.Containers[0].Image = "alice:2"
	bumpGeneration(context.Background(), e.base, d)
	if err := e.base.Update(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	e.settle()
	c = e.canary()
	if !e.target().Spec.Paused || c.Status.Phase != v1beta1.PhaseProgressing {
		t.Errorf("unpaused change: target paused=%v phase %s, want held and analysed", e.target().Spec.Paused, c.Status.Phase)
	}
	if len(e.eventsWith(ReasonUnguarded)) != 1 {
		t.Errorf("UnguardedChange events %v", e.eventsWith(ReasonUnguarded))
	}
	wantReady(t, c, metav1.ConditionFalse, "NamespaceNotInScope")

	e.updateNamespace(func(n *corev1.Namespace) { n.Labels = map[string]string{v1beta1.LabelSidecarInjection: "enabled"} })
	e.settle()
	wantReady(t, e.canary(), metav1.ConditionTrue, "Reconciled")
}

// Scenario 14: without the Canary's annotation the mesh is the kuma.io/mesh label of the
// pods, then of the namespace (Kuma 2.x), before the annotations.
func TestSafety14MeshFromLabels(t *testing.T) {
	tests := []struct {
		name                 string
		podLabel, podAnn     string
		nsLabel, nsAnn, want string
	}{
		{"pod label over namespace annotation", "mesh-b", "", "", "mesh-a", "mesh-b"},
		{"pod label over namespace label", "mesh-b", "", "mesh-c", "mesh-a", "mesh-b"},
		{"namespace label over annotations", "", "mesh-d", "mesh-c", "mesh-a", "mesh-c"},
		{"pod annotation over namespace annotation", "", "mesh-d", "", "mesh-a", "mesh-d"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := seedCanary()
			c.Annotations = nil
			d := targetDeployment()
			if tt.podLabel != "" {
				d.Spec.Template.Labels[v1beta1.LabelMesh] = tt.podLabel
			}
			if tt.podAnn != "" {
				d.Spec.Template.Annotations = map[string]string{v1beta1.AnnotationMesh: tt.podAnn}
			}
			e := newEnv(t, c, d)
			e.updateNamespace(func(n *corev1.Namespace) {
				if tt.nsLabel != "" {
					n.Labels[v1beta1.LabelMesh] = tt.nsLabel
				}
				if tt.nsAnn != "" {
					n.Annotations = map[string]string{v1beta1.AnnotationMesh: tt.nsAnn}
				}
			})
			e.settle()
			if got := e.router.targets[ns+"/alice"].Mesh; got != tt.want {
				t.Errorf("route mesh %q, want %q", got, tt.want)
			}
			if own := e.canary().Status.Ownership; own == nil || own.Route == nil || own.Route.Mesh != tt.want {
				t.Errorf("recorded route %+v, want mesh %s", own, tt.want)
			}
		})
	}
}

// Scenario 15: finalize gives the user's own pause back, and releases coalmine's.
func TestSafety15UserPauseRestoredAtFinalize(t *testing.T) {
	t.Run("user paused", func(t *testing.T) {
		d := targetDeployment()
		d.Spec.Paused = true
		e := newEnv(t, seedCanary(), d)
		e.settle()
		c := e.canary()
		if c.Status.Phase != v1beta1.PhaseInitialized || c.Status.Ownership == nil || !c.Status.Ownership.UserPaused {
			t.Fatalf("phase %s ownership %+v, want Initialized with the user's pause recorded", c.Status.Phase, c.Status.Ownership)
		}
		if !e.target().Spec.Paused {
			t.Fatal("the user's pause was lifted")
		}
		e.deleteCanary()
		e.settle()
		if e.exists() {
			t.Fatal("Canary still there")
		}
		if d := e.target(); !d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" {
			t.Errorf("target paused=%v labels %v, want the user's pause kept, unmanaged", d.Spec.Paused, d.Labels)
		}
	})
	t.Run("held mid-analysis", func(t *testing.T) {
		e := newEnv(t, seedCanary(), targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		if own := e.canary().Status.Ownership; own == nil || own.UserPaused || !e.target().Spec.Paused {
			t.Fatalf("ownership %+v paused %v, want coalmine's own pause", own, e.target().Spec.Paused)
		}
		e.deleteCanary()
		e.settle()
		if e.exists() {
			t.Fatal("Canary still there")
		}
		if d := e.target(); d.Spec.Paused || d.Labels[v1beta1.LabelManaged] != "" {
			t.Errorf("target paused=%v labels %v, want unpaused, unmanaged", d.Spec.Paused, d.Labels)
		}
	})
}

// Scenario 16: a target deleted and re-created mid-analysis (new UID, no marks, unpaused,
// the canary's template) is held again at once.
func TestSafety16RecreatedTargetIsPausedAgain(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	stable := e.canary().Status.StableRevision
	rev := e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))

	old := e.target()
	if err := e.base.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	d := targetDeployment()
	d.UID = "alice-uid-2"
	d.Spec.Template.Spec.Containers[0].Image = "alice:2"
	if err := e.base.Create(context.Background(), d); err != nil {
		t.Fatal(err)
	}
	// The fake API server counts resourceVersions per object; a real one's are etcd
	// revisions, so the new object's is above any the loop wrote for the old one.
	for rvAtMost(t, d.ResourceVersion, old.ResourceVersion) {
		if err := e.base.Update(context.Background(), d); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.target(); got.UID != "alice-uid-2" || got.Spec.Paused {
		t.Fatalf("re-created target uid %s paused %v", got.UID, got.Spec.Paused)
	}
	e.reconcileOnce()

	tgt := e.target()
	if !tgt.Spec.Paused || tgt.Labels[v1beta1.LabelManaged] != "true" || tgt.Annotations[v1beta1.AnnotationStableRevision] != stable || tgt.Annotations[v1beta1.AnnotationRevision] != rev {
		t.Errorf("re-created target paused=%v labels %v annotations %v, want held on %s over %s", tgt.Spec.Paused, tgt.Labels, tgt.Annotations, rev, stable)
	}
	c := e.canary()
	if own := c.Status.Ownership; own == nil || own.Target.UID != "alice-uid-2" {
		t.Errorf("ownership %+v, want the new uid", own)
	}
	if c.Status.StableDeploymentRevision != "" {
		t.Errorf("stable deployment revision %q kept from the old object, want none", c.Status.StableDeploymentRevision)
	}
	if ev := e.eventsWith(ReasonTargetReplaced); len(ev) != 1 || !strings.HasPrefix(ev[0], corev1.EventTypeWarning) || !strings.Contains(ev[0], "alice-uid-2") {
		t.Errorf("TargetReplaced events %v", ev)
	}
	if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.CanaryRevision != rev || c.Status.StableRevision != stable {
		t.Errorf("phase %s canary %s stable %s", c.Status.Phase, c.Status.CanaryRevision, c.Status.StableRevision)
	}
	e.settle()
	if n := len(e.eventsWith(ReasonTargetReplaced)); n != 1 {
		t.Errorf("%d TargetReplaced events after settling, want 1", n)
	}
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
}

// Scenario 18: a route deleted mid-analysis comes back in the next pass at the weight it
// had, not at the next step.
func TestSafety18DeletedRouteRestoredAtOnce(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment())
	e.settle()
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	e.clock.Step(10 * time.Second)
	now := e.clock.Now()

	e.router.mu.Lock()
	delete(e.router.weights, ns+"/alice")
	e.router.mu.Unlock()
	e.reconcileOnce()
	if !e.clock.Now().Equal(now) {
		t.Fatal("clock moved")
	}
	if w, found := e.router.weight("alice"); !found || w != 10 {
		t.Errorf("route weight %d (found %v), want re-created at 10 in the next pass", w, found)
	}
	if c := e.canary(); c.Status.CanaryWeight != 10 || c.Status.Iterations != 1 {
		t.Errorf("status %+v: the restore must not take a step", c.Status)
	}
}

// Scenario 20: a Deployment of the canary's name that is not the Canary's is a condition,
// not a retry loop, and the wait for it is bounded by the progress deadline.
func TestSafety20ForeignCanaryDeploymentIsACondition(t *testing.T) {
	c := seedCanary()
	c.UID = "alice-canary-uid"
	c.Spec.ProgressDeadlineSeconds = ptr.To[int32](120)
	foreign := targetDeployment()
	foreign.Name, foreign.UID = "alice-canary", "foreign-uid"
	foreign.Labels = map[string]string{"team": "b"}
	foreign.Spec.Selector.MatchLabels = map[string]string{"app": "other"}
	foreign.Spec.Template.Labels = map[string]string{"app": "other"}
	foreign.Spec.Template.Spec.Containers[0].Image = "other:1"
	e := newEnv(t, c, targetDeployment(), foreign)
	e.settle()
	stable := e.canary().Status.StableRevision
	bad := e.ship("alice:2")
	e.settle() // reconcileOnce fails the test on any error Reconcile returns

	c = e.canary()
	if c.Status.Phase != v1beta1.PhaseProgressing {
		t.Fatalf("phase %s", c.Status.Phase)
	}
	wantReady(t, c, metav1.ConditionFalse, "CanaryDeploymentNotOwned", "alice-canary", "not controlled by Canary alice")
	if !e.target().Spec.Paused {
		t.Error("target not held")
	}

	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	if took := e.clock.Since(start); took < 120*time.Second || took > 150*time.Second {
		t.Errorf("rolled back after %s, want at the 120s progress deadline", took)
	}
	c = e.canary()
	if c.Status.FailedRevision != bad || !strings.Contains(c.Status.Message, "alice-canary") {
		t.Errorf("failed %s message %q", c.Status.FailedRevision, c.Status.Message)
	}
	if !strings.Contains(c.Status.Message, "not controlled by Canary alice") {
		t.Errorf("message %q does not say the canary Deployment is not the Canary's", c.Status.Message)
	}
	got, ok := e.deployment("alice-canary")
	if !ok || got.UID != "foreign-uid" || got.Spec.Template.Spec.Containers[0].Image != "other:1" ||
		!equality.Semantic.DeepEqual(got.Labels, foreign.Labels) || len(got.OwnerReferences) != 0 || got.Spec.Paused {
		t.Errorf("foreign Deployment touched: found %v %+v", ok, got.ObjectMeta)
	}
	if slices.Max(e.router.history) != 0 {
		t.Errorf("weights %v: a canary that is not ours got traffic", e.router.history)
	}
	tgt := e.target()
	if !tgt.Spec.Paused || tgt.Annotations[v1beta1.AnnotationStableRevision] != stable {
		t.Errorf("target paused=%v annotations %v", tgt.Spec.Paused, tgt.Annotations)
	}
	// Bounded: nothing more happens however long it stays.
	history := len(e.router.history)
	e.clock.Step(10 * time.Minute)
	e.settle()
	if p := e.phase(); p != v1beta1.PhaseFailed || len(e.router.history) != history {
		t.Errorf("phase %s, route writes %v after the rollback", p, e.router.history[history:])
	}
}
