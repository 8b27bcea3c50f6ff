package rollout

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// Event reasons of the analysis.
const (
	ReasonAdvance     = "Advance"
	ReasonFailedCheck = "FailedCheck"
	ReasonCanaryLost  = "CanaryNotReady"
)

// analyse runs the checks of one interval (or, before the first step, the pre-rollout
// hooks). Any failed, missing or errored metric is one failed check (Flagger counts one
// per interval, cumulative for the revision); at the threshold the revision is rolled
// back. All passed: the next step, or promotion after the last.
func (x *pass) analyse(ctx context.Context) {
	c := x.canary
	if c.Spec.SkipAnalysis {
		x.startPromotion("analysis skipped (spec.skipAnalysis)")
		return
	}
	x.status.ProgressStartTime = nil
	if x.status.LastStepTime == nil {
		// Pre-rollout hooks (a smoke test, say) before the canary gets any traffic.
		if failed := x.failedHooks(ctx, v1beta1.PreRolloutHook); len(failed) > 0 {
			x.failedCheck(failed)
			return
		}
		if c.Strategy() == v1beta1.StrategyCanary && x.trafficIncreaseHeld(ctx, firstStep(c.Steps())) {
			return
		}
		x.begin("canary ready")
		return
	}
	if name := x.rollbackRequested(ctx); name != "" {
		x.rollback(fmt.Sprintf("rollback requested by webhook %s", name))
		return
	}
	failed := x.failedHooks(ctx, v1beta1.RolloutHook)
	in := c.DeepCopy()
	in.Status = *x.status.DeepCopy()
	results := x.r.Analyzer.Run(ctx, in)
	x.results = results
	x.status.Iterations++
	x.status.LastStepTime = x.stamp()
	x.status.Metrics = x.metricStatuses(results)

	var passed []string
	for _, res := range results {
		switch res.Outcome {
		case v1beta1.MetricFailed, v1beta1.MetricNoData, v1beta1.MetricError:
			failed = append(failed, describe(c, res))
		case v1beta1.MetricPassed:
			passed = append(passed, fmt.Sprintf("%s %s", res.Metric, formatValue(res.Value)))
		}
	}
	if len(failed) == 0 && len(results) > 0 && len(passed) == 0 {
		// onNoData: skip lets a metric without data pass by, not a whole step: a step
		// where nothing was measured proves nothing.
		failed = append(failed, "no metric passed: every metric was skipped for lack of data (onNoData: skip needs at least one metric with data)")
	}
	if len(failed) > 0 {
		x.failedCheck(failed)
		return
	}
	x.status.PassedChecks++
	why := "all checks passed"
	if len(passed) > 0 {
		why = "passed: " + strings.Join(passed, ", ")
	}
	if c.Strategy() != v1beta1.StrategyCanary {
		if !x.iterationsDone(why) {
			return
		}
	} else if next := nextStep(c.Steps(), x.status.CanaryWeight); next >= 0 {
		if x.trafficIncreaseHeld(ctx, next) {
			return
		}
		x.step(next, why)
		return
	}
	// Flagger's confirm-promotion gate: the analysis goes on at the maximum weight until
	// it opens.
	if closed := x.gateClosed(ctx, v1beta1.ConfirmPromotionHook, x.status.CanaryRevision); closed != "" {
		const waiting = "promotion waits for approval"
		if !strings.Contains(x.canary.Status.Message, waiting) {
			x.event(corev1.EventTypeNormal, ReasonWaiting, "Promote", "Halt: revision %s passed the analysis; %s: %s", x.status.CanaryRevision, waiting, closed)
		}
		x.transition(v1beta1.PhaseWaitingPromotion, fmt.Sprintf("revision %s passed the analysis %s; %s: %s",
			x.status.CanaryRevision, x.passedAt(), waiting, closed))
		x.requeueAfter(c.AnalysisInterval())
		return
	}
	if c.Strategy() == v1beta1.StrategyBlueGreen && x.status.CanaryWeight != 100 {
		x.switchToCanary(why)
		return
	}
	x.startPromotion(fmt.Sprintf("analysis passed %s (%s)", x.passedAt(), why))
}

// begin starts the analysis once the canary is ready and the pre-rollout hooks passed:
// the first weight step; for blue/green no weight at all (the canary is analysed on
// traffic sent straight to it, users stay on primary); for A/B testing the requests that
// match analysis.match.
func (x *pass) begin(why string) {
	c := x.canary
	switch c.Strategy() {
	case v1beta1.StrategyBlueGreen:
		x.iterate(0, why)
	case v1beta1.StrategyABTesting:
		x.iterate(100, why)
	default:
		x.step(firstStep(c.Steps()), why)
	}
}

// iterationsDone advances blue/green and A/B testing after a passed check (Flagger's
// runBlueGreen and runAB): the next iteration until analysis.iterations checks passed,
// then done. Done, A/B testing is promoted and blue/green switches all traffic to the
// canary (switchToCanary), both behind the confirm-promotion gate.
func (x *pass) iterationsDone(why string) bool {
	if x.status.PassedChecks >= x.canary.Iterations() {
		return true
	}
	w := 0
	if x.canary.Strategy() == v1beta1.StrategyABTesting {
		w = 100 // also after a canary that lost readiness came back
	}
	x.iterate(w, why)
	return false
}

// switchToCanary is blue/green's switch, after its iterations passed and the
// confirm-promotion gate opened: all traffic to the canary, one more check there, then
// the promotion.
func (x *pass) switchToCanary(why string) {
	c := x.canary
	x.status.CanaryWeight = 100
	x.status.LastStepTime = x.stamp()
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s %s", x.status.CanaryRevision, x.position()))
	x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Routing all traffic to canary: %d of %d iterations passed (%s)",
		x.status.PassedChecks, c.Iterations(), why)
	x.requeueAfter(c.AnalysisInterval())
}

// iterate records one blue/green or A/B iteration at weight w (0: users stay on primary;
// 100 under analysis.match: the matching requests go to the canary).
func (x *pass) iterate(w int, why string) {
	c := x.canary
	first := x.status.LastStepTime == nil
	x.status.CanaryWeight = w
	x.status.LastStepTime = x.stamp()
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s %s", x.status.CanaryRevision, x.position()))
	switch {
	case first && w == 0:
		x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Starting blue/green analysis (%s): %d iterations on traffic sent straight to %s, all users on %s",
			why, c.Iterations(), x.rt.Canary, x.rt.Primary)
	case first:
		x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Starting A/B testing (%s): %d iterations, requests matching analysis.match to %s, the others to %s",
			why, c.Iterations(), x.rt.Canary, x.rt.Primary)
	default:
		x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Advance canary iteration %d/%d (%s)", x.status.PassedChecks, c.Iterations(), why)
	}
	x.requeueAfter(c.AnalysisInterval())
}

// position says where the analysis of the revision stands, for the status message.
func (x *pass) position() string {
	c, w := x.canary, x.status.CanaryWeight
	switch c.Strategy() {
	case v1beta1.StrategyBlueGreen:
		if w == 100 {
			return fmt.Sprintf("with all traffic on the canary after %d blue/green iterations", c.Iterations())
		}
		return fmt.Sprintf("in blue/green iteration %d/%d, users on primary", x.status.PassedChecks, c.Iterations())
	case v1beta1.StrategyABTesting:
		if w == 0 {
			return fmt.Sprintf("in A/B iteration %d/%d, no request on the canary", x.status.PassedChecks, c.Iterations())
		}
		return fmt.Sprintf("in A/B iteration %d/%d, requests matching analysis.match on the canary", x.status.PassedChecks, c.Iterations())
	}
	return fmt.Sprintf("at canary weight %d%%", w)
}

// passedAt says where the analysis passed, for the promotion's messages.
func (x *pass) passedAt() string {
	c := x.canary
	switch c.Strategy() {
	case v1beta1.StrategyBlueGreen:
		if x.status.CanaryWeight == 100 {
			return fmt.Sprintf("in %d blue/green iterations and with all traffic on the canary", c.Iterations())
		}
		return fmt.Sprintf("in %d blue/green iterations", c.Iterations())
	case v1beta1.StrategyABTesting:
		return fmt.Sprintf("in %d A/B iterations", c.Iterations())
	}
	return fmt.Sprintf("at the maximum weight %d%%", x.status.CanaryWeight)
}

// step sets the canary weight to w; converge writes it to the route.
func (x *pass) step(w int, why string) {
	x.status.CanaryWeight = w
	x.status.LastStepTime = x.stamp()
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s at canary weight %d%%", x.status.CanaryRevision, w))
	x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Advance canary weight to %d%% (%s)", w, why)
	x.requeueAfter(x.canary.AnalysisInterval())
}

// failedCheck counts one failed check and rolls back at the threshold.
func (x *pass) failedCheck(failed []string) {
	c := x.canary
	for _, d := range failed {
		x.event(corev1.EventTypeWarning, ReasonFailedCheck, "Analyse", "Halt advancement at weight %d%%: %s", x.status.CanaryWeight, d)
	}
	x.status.FailedChecks++
	if x.status.LastStepTime != nil {
		x.status.LastStepTime = x.stamp()
	}
	if x.status.FailedChecks >= c.Threshold() {
		x.rollback(fmt.Sprintf("%d failed checks reached the threshold of %d; last: %s",
			x.status.FailedChecks, c.Threshold(), strings.Join(failed, "; ")))
		return
	}
	x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s %s: %d of %d failed checks; last: %s",
		x.status.CanaryRevision, x.position(), x.status.FailedChecks, c.Threshold(), strings.Join(failed, "; ")))
	x.requeueAfter(c.AnalysisInterval())
}

// canaryLost handles a canary that had traffic and is not ready now: its weight goes to 0
// at once (a canary without ready pods carries no traffic), and each interval it stays
// unready is a failed check, so the wait ends at the threshold.
func (x *pass) canaryLost() {
	if x.status.CanaryWeight > 0 {
		x.event(corev1.EventTypeWarning, ReasonCanaryLost, "Analyse", "Canary Deployment %s lost readiness at weight %d%%: all traffic to %s",
			x.canary.CanaryDeploymentName(), x.status.CanaryWeight, x.rt.Primary)
		x.status.CanaryWeight = 0
		x.transition(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s: canary Deployment %s not ready, traffic back to primary", x.status.CanaryRevision, x.canary.CanaryDeploymentName()))
	}
	due := x.status.LastStepTime.Add(x.canary.AnalysisInterval())
	if x.now.Before(due) {
		x.requeueAfter(due.Sub(x.now))
		return
	}
	x.failedCheck([]string{fmt.Sprintf("canary Deployment %s not ready", x.canary.CanaryDeploymentName())})
}

func firstStep(steps []int) int {
	for _, s := range steps {
		if s > 0 {
			return s
		}
	}
	return steps[len(steps)-1]
}

// nextStep is the first step above w, or -1 after the last.
func nextStep(steps []int, w int) int {
	for _, s := range steps {
		if s > w {
			return s
		}
	}
	return -1
}

func (x *pass) metricStatuses(results []analysis.Result) []v1beta1.MetricStatus {
	if len(results) == 0 {
		return nil
	}
	out := make([]v1beta1.MetricStatus, 0, len(results))
	for _, res := range results {
		out = append(out, v1beta1.MetricStatus{
			Name: res.Metric, Value: formatValue(res.Value), Outcome: res.Outcome,
			Message: res.Message, LastCheckTime: x.stamp(),
		})
	}
	return out
}
