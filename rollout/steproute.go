package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// ReasonRouteBehind: the route does not carry the weight of the step being analysed.
const ReasonRouteBehind = "RouteBehind"

// ConditionRouteSynced is False while the route misses the recorded canary weight of a
// revision under analysis (its lastTransitionTime says since when), and absent otherwise.
const ConditionRouteSynced = "RouteSynced"

// stepOnRoute runs AwaitStep and Analyse only for a step whose weight is on the route. A
// step is recorded before the route is written (persist, then converge); when that write
// fails (the mesh control plane is unreachable) the canary does not get the weight, and
// an interval measured then proves nothing: the previous canary's samples still in the
// metric window would pass a bad release (found by the chaos run, e2e/chaos). So the
// interval restarts when the route carries the weight, which converge writes again at the
// end of this pass. The wait is bounded by the Canary's progress deadline, counted from
// when the route first missed the weight: past it the revision is rolled back, which
// keeps the target on stable and sends the route to primary once the control plane takes
// writes again.
func (x *pass) stepOnRoute(ctx context.Context) error {
	on, err := x.weightOnRoute(ctx)
	if err != nil {
		return err
	}
	switch {
	case !on:
		const behind = "the route does not carry this weight yet"
		if !strings.Contains(x.canary.Status.Message, behind) {
			x.event(corev1.EventTypeWarning, ReasonRouteBehind, "Analyse",
				"Route does not carry canary weight %d%% yet: the interval at this weight starts once it does", x.status.CanaryWeight)
		}
		x.setCondition(ConditionRouteSynced, metav1.ConditionFalse, ReasonRouteBehind,
			fmt.Sprintf("route %s does not carry canary weight %d%%: the mesh control plane did not take the write", x.routeName(), x.status.CanaryWeight))
		since := meta.FindStatusCondition(x.status.Conditions, ConditionRouteSynced).LastTransitionTime.Time
		if deadline := x.canary.ProgressDeadline(); !x.now.Before(since.Add(deadline)) {
			x.rollback(fmt.Sprintf("route %s did not carry canary weight %d%% within the progress deadline of %s (since %s): the mesh control plane did not take the write",
				x.routeName(), x.status.CanaryWeight, deadline, since.UTC().Format(time.RFC3339)))
			return nil
		}
		x.status.LastStepTime = x.stamp()
		x.transition(x.status.Phase, fmt.Sprintf("analysing revision %s at canary weight %d%%: %s (the mesh control plane did not take the last write); the interval starts once it does",
			x.status.CanaryRevision, x.status.CanaryWeight, behind))
		x.requeueAfter(x.canary.AnalysisInterval())
	case x.action == actAnalyse:
		x.routeSynced()
		x.analyse(ctx)
	default:
		x.routeSynced()
		x.requeueAfter(x.nextCheck().Sub(x.now))
	}
	return nil
}

// routeSynced clears RouteSynced once the route carries the weight. Like Reconciling and
// Stalled, the conditions of trouble are there only while it lasts: every condition is
// sent on each status write and listed again in the status's managedFields, and an
// "all is well" RouteSynced and BareServices made each Canary ~0.6 KB larger for the
// apiserver to patch, store and send to each watcher, 8 times a rollout (make bench).
func (x *pass) routeSynced() {
	x.removeCondition(ConditionRouteSynced)
}

// routeName names the route as its ownership record does (kind and name), else by the
// apex Service it splits.
func (x *pass) routeName() string {
	if r := x.status.Ownership.Route; r != nil {
		return r.Kind + " " + r.Name
	}
	return "of " + x.rt.Apex
}

// weightOnRoute reports whether the route carries the recorded weight: as this process
// last applied it, or, for a process that applied none yet, as the route says.
func (x *pass) weightOnRoute(ctx context.Context) (bool, error) {
	w := x.desiredWeight()
	key := canaryKey(x.canary)
	if applied, ok := x.r.memo.applied(key); ok {
		return applied == w, nil
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	o, err := x.router.Observe(ctx, x.rt)
	if err != nil {
		return false, fmt.Errorf("read route: %w", err)
	}
	return o.Found && o.Ours && o.Weight == w, nil
}

// nextCheck is when the interval at the current step ends: an interval after the step,
// counted from when the route took the step's weight. The decision is recorded first and
// the route written after it (converge), so under load the canary's traffic starts a
// status write later than the step's stamp; a check at the stamp plus the interval then
// found no canary series yet in the first step (make bench, N=50 and 200). The lag is
// known to the process that wrote the route; another process counts from the stamp.
// Zero before the first step: it is due at once.
func (x *pass) nextCheck() time.Time {
	step := x.status.LastStepTime
	if step == nil {
		return time.Time{}
	}
	lag := x.r.memo.routeLag(canaryKey(x.canary), x.desiredWeight(), step.Time)
	return step.Add(x.canary.AnalysisInterval() + lag)
}
