package rollout

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
)

// blueGreenCanary is the seed's Canary as Flagger's blue/green: iterations, no weights.
func blueGreenCanary(iterations int) *v1beta1.Canary {
	c := seedCanary()
	c.Spec.Analysis.StepWeight, c.Spec.Analysis.MaxWeight = 0, 0
	c.Spec.Analysis.Iterations = iterations
	return c
}

// abCanary is Flagger's A/B testing example: iterations and a header or a cookie.
func abCanary(iterations int) *v1beta1.Canary {
	c := blueGreenCanary(iterations)
	c.Spec.Analysis.Match = []v1beta1.HTTPMatchRequest{
		{Headers: map[string]v1beta1.StringMatch{"x-canary": {Exact: "insider"}}},
		{Headers: map[string]v1beta1.StringMatch{"cookie": {Regex: "^(.*?;)?(canary=always)(;.*)?$"}}},
	}
	return c
}

// trace is what the status and the route said after each settled pass.
type trace struct {
	phase        v1beta1.CanaryPhase
	status       int // status.canaryWeight
	route        int // the weight the route has
	passed       int
	targetPaused bool
}

// runTracing runs the rollout until it leaves the analysis and promotion, recording every
// settled state.
func (e *env) runTracing(until v1beta1.CanaryPhase) []trace {
	e.t.Helper()
	var out []trace
	for range 200 {
		d := e.settle()
		c := e.canary()
		w, _ := e.router.weight("alice")
		out = append(out, trace{c.Status.Phase, c.Status.CanaryWeight, w, c.Status.PassedChecks, e.target().Spec.Paused})
		if c.Status.Phase == until {
			return out
		}
		if d == 0 {
			e.t.Fatalf("no requeue asked at %+v", c.Status)
		}
		e.clock.Step(d)
	}
	e.t.Fatalf("%s not reached: %+v", until, e.canary().Status)
	return nil
}

// holdTarget makes the target's next rollout hang (no updated replica) until
// e.stuck["alice"] is deleted, so that a test sees the promotion in progress.
func (e *env) holdTarget() {
	e.t.Helper()
	e.stuck["alice"] = true
	d := e.target()
	d.Status.UpdatedReplicas, d.Status.AvailableReplicas, d.Status.ReadyReplicas = 0, 0, 0
	if err := e.base.Status().Update(e.t.Context(), d); err != nil {
		e.t.Fatal(err)
	}
}

// TestBlueGreenIterations: with analysis.iterations and no weights, the canary is checked
// three times while the route keeps everything on primary (the load tester calls
// alice-canary directly); then the route switches 0 -> 100, one more check passes at
// 100, the target rolls with the users on the canary, and traffic goes back to primary.
func TestBlueGreenIterations(t *testing.T) {
	e := newEnv(t, blueGreenCanary(3), targetDeployment())
	e.settle()
	rev := e.ship("alice:2")
	e.holdTarget() // the target's rollout takes a while: Promoting is seen
	tr := e.runTracing(v1beta1.PhasePromoting)
	delete(e.stuck, "alice")
	tr = append(tr, e.runTracing(v1beta1.PhaseSucceeded)...)

	if got := distinct(e.router.history); !slices.Equal(got, []int{0, 100, 0}) {
		t.Errorf("route weights %v, want [0 100 0]", got)
	}
	if e.analyzer.calls != 4 {
		t.Errorf("%d analyses, want 3 iterations and one check after the switch", e.analyzer.calls)
	}
	for _, s := range tr {
		switch {
		case s.phase.Analysing() && s.passed < 3 && (s.route != 0 || s.status != 0):
			t.Errorf("iteration %d/3: route %d%%, status %d%%, want 0 (users on primary)", s.passed, s.route, s.status)
		case s.route == 100 && s.passed < 3:
			t.Errorf("route switched after %d passed checks, want 3", s.passed)
		case s.phase == v1beta1.PhasePromoting && (s.route != 100 || s.targetPaused):
			t.Errorf("promoting: route %d%%, target paused %v; want the users on the canary while the target rolls", s.route, s.targetPaused)
		}
	}
	var promoting bool
	for _, s := range tr {
		promoting = promoting || s.phase == v1beta1.PhasePromoting
	}
	if !promoting {
		t.Errorf("never Promoting: %+v", tr)
	}
	c := e.canary()
	if c.Status.LastPromotedRevision != rev || c.Status.CanaryWeight != 0 || c.Status.PassedChecks != 4 {
		t.Errorf("status %+v", c.Status)
	}
	if d := e.target(); d.Spec.Paused || d.Annotations[v1beta1.AnnotationStableRevision] != rev {
		t.Errorf("target paused=%v stable=%s, want it promoted to %s", d.Spec.Paused, d.Annotations[v1beta1.AnnotationStableRevision], rev)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary deployment kept after the promotion")
	}
	for _, want := range []string{"Starting blue/green analysis", "Advance canary iteration 1/3", "Advance canary iteration 2/3", "Routing all traffic to canary: 3 of 3 iterations passed"} {
		if !slices.ContainsFunc(e.eventsWith(ReasonAdvance), func(n string) bool { return strings.Contains(n, want) }) {
			t.Errorf("no Advance event %q in %v", want, e.eventsWith(ReasonAdvance))
		}
	}

	// Flagger: iterations wins over stepWeight.
	c2 := blueGreenCanary(2)
	c2.Spec.Analysis.StepWeight, c2.Spec.Analysis.MaxWeight = 10, 50
	e2 := newEnv(t, c2, targetDeployment())
	e2.settle()
	e2.ship("alice:2")
	e2.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if got := distinct(e2.router.history); !slices.Equal(got, []int{0, 100, 0}) {
		t.Errorf("iterations with stepWeight: route weights %v, want blue/green's [0 100 0]", got)
	}
}

// TestBlueGreenFailureNeverRoutesUsers: a release failing its checks during the blue/green
// iterations is rolled back at the threshold without the route ever giving the canary a
// request, also when some iterations passed first; a canary that loses readiness
// mid-analysis gets no weight either.
func TestBlueGreenFailureNeverRoutesUsers(t *testing.T) {
	for name, fail := range map[string]func(call int) []analysis.Result{
		"every check fails": func(int) []analysis.Result { return failingSuccessRate() },
		"two pass, then every check fails": func(call int) []analysis.Result {
			if call < 2 {
				return passing()
			}
			return failingSuccessRate()
		},
		"checks alternate": func(call int) []analysis.Result {
			if call%2 == 0 {
				return failingSuccessRate()
			}
			return passing()
		},
	} {
		t.Run(name, func(t *testing.T) {
			e := newEnv(t, blueGreenCanary(10), targetDeployment())
			e.settle()
			e.analyzer.fail = fail
			bad := e.ship("alice:bad")
			e.runTracing(v1beta1.PhaseFailed)
			c := e.canary()
			if c.Status.FailedRevision != bad || c.Status.FailedChecks != 5 {
				t.Errorf("failedRevision %s failedChecks %d, want %s and 5", c.Status.FailedRevision, c.Status.FailedChecks, bad)
			}
			if len(e.router.history) == 0 || slices.Max(e.router.history) != 0 {
				t.Errorf("route weights %v, want never above 0", e.router.history)
			}
			if !e.target().Spec.Paused {
				t.Error("target unpaused after the rollback")
			}
		})
	}

	t.Run("canary lost mid-analysis", func(t *testing.T) {
		e := newEnv(t, blueGreenCanary(3), targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("first iteration", func(c *v1beta1.Canary) bool { return c.Status.PassedChecks == 1 })
		e.stuck["alice-canary"] = true
		d, _ := e.deployment("alice-canary")
		d.Status.ReadyReplicas, d.Status.AvailableReplicas = 0, 0
		if err := e.base.Status().Update(t.Context(), d); err != nil {
			t.Fatal(err)
		}
		e.clock.Step(30 * time.Second)
		e.settle()
		if c := e.canary(); c.Status.FailedChecks == 0 {
			t.Errorf("an unready canary did not count as a failed check: %+v", c.Status)
		}
		delete(e.stuck, "alice-canary")
		e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
		if got := distinct(e.router.history); !slices.Equal(got, []int{0, 100, 0}) {
			t.Errorf("route weights %v, want [0 100 0]", got)
		}
	})
}

// TestABMatchRoutesOnlyMatching: with analysis.match and iterations, the route sends the
// requests that match (a header, a cookie) to the canary from the first step to the end of
// the promotion, and everything else to primary; after the promotion the route is the
// plain one again.
func TestABMatchRoutesOnlyMatching(t *testing.T) {
	e := newEnv(t, abCanary(2), targetDeployment())
	e.settle()
	rev := e.ship("alice:2")
	e.holdTarget()
	tr := e.runTracing(v1beta1.PhasePromoting)
	delete(e.stuck, "alice")
	tr = append(tr, e.runTracing(v1beta1.PhaseSucceeded)...)

	if got := distinct(e.router.history); !slices.Equal(got, []int{0, 100, 0}) {
		t.Errorf("route weights %v, want [0 100 0]", got)
	}
	if e.analyzer.calls != 2 {
		t.Errorf("%d analyses, want the 2 iterations", e.analyzer.calls)
	}
	for _, s := range tr {
		if (s.phase.Analysing() || s.phase == v1beta1.PhasePromoting) && s.route != 100 {
			t.Errorf("%s: route %d%% to the matching requests, want 100", s.phase, s.route)
		}
	}
	target := e.router.targets[ns+"/alice"]
	want := []router.Match{
		{Headers: []router.HeaderMatch{{Name: "x-canary", Value: router.StringMatch{Exact: "insider"}}}},
		{Headers: []router.HeaderMatch{{Name: "cookie", Value: router.StringMatch{Regex: "^(.*?;)?(canary=always)(;.*)?$"}}}},
	}
	if !slices.EqualFunc(target.Match, want, func(a, b router.Match) bool {
		return slices.Equal(a.Headers, b.Headers) && a.Path == nil && a.Method == nil
	}) {
		t.Errorf("route target match %+v, want %+v", target.Match, want)
	}

	// What the router writes for that target at 100: only the matching requests reach the
	// canary (the routers' own tests judge the full objects).
	tr100 := router.NewTrafficRoute(target, 100)
	if s := tr100.Spec.Conf.Split; s[0].Weight != 100 || s[1].Weight != 0 {
		t.Errorf("TrafficRoute conf.split %+v, want everything that does not match on primary", s)
	}
	if len(tr100.Spec.Conf.HTTP) != 2 || tr100.Spec.Conf.HTTP[0].Match.Headers["x-canary"].Exact != "insider" || tr100.Spec.Conf.HTTP[1].Split[1].Weight != 100 {
		t.Errorf("TrafficRoute conf.http %+v", tr100.Spec.Conf.HTTP)
	}
	rules := router.NewMeshHTTPRoute(target, 100).Spec.To[0].Rules
	if len(rules) != 2 || len(rules[0].Matches) != 2 || rules[0].Matches[1].Headers[0].Name != "cookie" ||
		rules[0].Default.BackendRefs[1].Weight != 100 || rules[1].Default.BackendRefs[0].Weight != 100 {
		t.Errorf("MeshHTTPRoute rules %+v", rules)
	}

	c := e.canary()
	if c.Status.LastPromotedRevision != rev || c.Status.CanaryWeight != 0 {
		t.Errorf("status %+v", c.Status)
	}
	if !slices.ContainsFunc(e.eventsWith(ReasonAdvance), func(n string) bool { return strings.Contains(n, "Starting A/B testing") }) {
		t.Errorf("no A/B start event in %v", e.eventsWith(ReasonAdvance))
	}
	if !strings.Contains(c.Status.Message, "promoted") {
		t.Errorf("message %q", c.Status.Message)
	}
}

// desiredWeight gives a blue/green canary under analysis no weight but the switch's 100,
// whatever the status holds (a spec changed to blue/green mid-analysis at weight 20).
func TestBlueGreenDesiredWeight(t *testing.T) {
	for _, tt := range []struct {
		phase  v1beta1.CanaryPhase
		status int
		want   int
	}{
		{v1beta1.PhaseProgressing, 0, 0},
		{v1beta1.PhaseProgressing, 20, 0},
		{v1beta1.PhaseWaitingPromotion, 20, 0},
		{v1beta1.PhaseProgressing, 100, 100},
		{v1beta1.PhasePromoting, 100, 100},
		{v1beta1.PhaseFinalising, 80, 80}, // stepWeightPromotion on the way back
		{v1beta1.PhaseFailed, 100, 0},
	} {
		x := &pass{canary: blueGreenCanary(3), status: &v1beta1.CanaryStatus{Phase: tt.phase, CanaryWeight: tt.status}}
		if got := x.desiredWeight(); got != tt.want {
			t.Errorf("%s at status weight %d: desiredWeight %d, want %d", tt.phase, tt.status, got, tt.want)
		}
	}
}
