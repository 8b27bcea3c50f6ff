package rollout

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ReasonRouteBehind: the route does not carry the weight of the step being analysed.
const ReasonRouteBehind = "RouteBehind"

// stepOnRoute runs AwaitStep and Analyse only for a step whose weight is on the route. A
// step is recorded before the route is written (persist, then converge); when that write
// fails (the mesh control plane is unreachable) the canary does not get the weight, and
// an interval measured then proves nothing: the previous canary's samples still in the
// metric window would pass a bad release (found by the chaos run, e2e/chaos). So the
// interval restarts when the route carries the weight, which converge writes again at the
// end of this pass.
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
		x.status.LastStepTime = x.stamp()
		x.transition(x.status.Phase, fmt.Sprintf("analysing revision %s at canary weight %d%%: %s (the mesh control plane did not take the last write); the interval starts once it does",
			x.status.CanaryRevision, x.status.CanaryWeight, behind))
		x.requeueAfter(x.canary.AnalysisInterval())
	case x.action == actAnalyse:
		x.analyse(ctx)
	default:
		x.requeueAfter(x.status.LastStepTime.Add(x.canary.AnalysisInterval()).Sub(x.now))
	}
	return nil
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
