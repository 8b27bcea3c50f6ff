package rollout

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
)

// pass is one reconcile of one Canary: what it read, the status it builds, and the
// events and requeue it asks for. A pass runs a fixed pipeline (reconcile below), like
// the deployment controller's syncDeployment: each step is idempotent, so a pass that
// dies anywhere is redone by the next one.
type pass struct {
	r      *Reconciler
	canary *v1beta1.Canary
	status *v1beta1.CanaryStatus
	now    time.Time

	target  *appsv1.Deployment
	serving servingRS          // what runs the stable revision, as observe found it (identity.go)
	canaryD *appsv1.Deployment // the canary Deployment, when it exists
	app     map[string]string
	router  router.Router
	kind    string // route kind
	rt      router.Target
	ns      namespaceScope

	// liveRevision is the template revision of revisionOf, the target object it was
	// computed for (revision).
	liveRevision string
	revisionOf   *appsv1.Deployment

	situation Situation
	action    action
	gate      string // why a confirm-rollout gate is closed, from observe

	events   []pendingEvent
	results  []analysis.Result
	requeue  time.Duration
	notReady *notReady
	// degraded is a problem that does not stop the pass but makes Ready false.
	degraded *notReady
	// postRollout: the revision was promoted or rolled back, call the post-rollout hooks
	// once the status says so.
	postRollout bool
}

type notReady struct{ reason, message string }

// errCacheLag marks an error that only says the cache is behind the API server: the pass
// is retried shortly, without reporting a failure.
var errCacheLag = errors.New("cache behind the API server")

type pendingEvent struct{ typ, reason, action, note string }

func (r *Reconciler) newPass(c *v1beta1.Canary) *pass {
	clk := r.Clock
	if clk == nil {
		clk = clock.RealClock{}
	}
	return &pass{r: r, canary: c, status: c.Status.DeepCopy(), now: clk.Now()}
}

func (x *pass) requeueAfter(d time.Duration) {
	if d < time.Second {
		d = time.Second
	}
	if x.requeue == 0 || d < x.requeue {
		x.requeue = d
	}
}

func (x *pass) event(typ, reason, action, format string, args ...any) {
	x.events = append(x.events, pendingEvent{typ: typ, reason: reason, action: action, note: fmt.Sprintf(format, args...)})
}

// stop ends the pass with Ready=False; nothing further is touched.
func (x *pass) stop(reason, format string, args ...any) {
	x.notReady = &notReady{reason: reason, message: fmt.Sprintf(format, args...)}
}

// degrade makes Ready false without stopping the pass: the loop still guards what it can.
func (x *pass) degrade(reason, format string, args ...any) {
	if x.degraded == nil {
		x.degraded = &notReady{reason: reason, message: fmt.Sprintf(format, args...)}
	}
}

// reconcile is the pipeline of a live Canary:
//
//  1. load       the target, the router, the mesh, the namespace (observe.go)
//  2. acquire    record the target and the route in status before touching them; add
//     the finalizer; handle a re-created target and renames (ownership.go)
//  3. services   create or adopt the Services; report bare ones (services.go)
//  4. classify   observation -> situation (situation.go)
//  5. decide     phase x situation -> action, which changes only the status (table.go)
//  6. persist    merge-patch the status: the decision is recorded (status.go); only
//     Initialize marks the target first, since Initialized means "guarded"
//  7. converge   route, canary Deployment and target follow the recorded status
//     (converge.go)
func (x *pass) reconcile(ctx context.Context) error {
	if !x.checkSpec() {
		return nil
	}
	if x.status.Phase == "" {
		x.transition(v1beta1.PhaseInitializing, "initializing")
	}
	if err := x.load(ctx); err != nil || x.notReady != nil {
		return err
	}
	if done, err := x.acquire(ctx); err != nil || done || x.notReady != nil {
		return err
	}
	if err := x.ensureServices(ctx); err != nil || x.notReady != nil {
		return err
	}
	if err := x.reportBareServices(ctx); err != nil {
		return err
	}
	obs, err := x.observe(ctx)
	if err != nil {
		return err
	}
	x.gate = obs.gateClosed
	x.situation = classify(obs)
	x.action = decide(x.status.Phase, x.situation)
	log.FromContext(ctx).V(1).Info("decide", "situation", x.situation, "action", x.action)
	if err := x.act(ctx); err != nil {
		return err
	}
	if x.action == actInitialize {
		// Initialized promises that the webhook guards the target: mark it (managed label,
		// stable revision) before saying so. Nothing is destroyed by marking it, so a pass
		// that dies in between simply initializes again.
		if err := x.converge(ctx); err != nil {
			return err
		}
	}
	if x.notReady == nil {
		x.setReady()
	}
	if err := x.writeStatus(ctx); err != nil {
		return err
	}
	if err := x.converge(ctx); err != nil {
		return err
	}
	if _, isCommand := commandActions[x.action]; isCommand {
		return x.clearCommand(ctx)
	}
	return nil
}

// commandActions are the actions that consume coalmine.dev/command.
var commandActions = map[action]struct{}{
	actCmdPromote: {}, actCmdAbort: {}, actCmdRetry: {}, actCmdPause: {}, actCmdResume: {}, actCmdRefused: {},
}

// act runs the decided action. Actions change the status and queue events; only
// transition (status.go) sets a phase.
func (x *pass) act(ctx context.Context) error {
	switch x.action {
	case actInitialize:
		x.initialize()
	case actIdle:
		x.idle()
	case actTargetMissing:
		x.stop("TargetNotFound", "Deployment %s not found", x.canary.Spec.TargetRef.Name)
	case actRestamp:
		x.restamp()
	case actStart:
		x.start()
	case actWait:
		x.wait()
	case actRestart:
		x.restart("")
	case actRefuseFailed:
		x.refuseFailed()
	case actRevert:
		x.revert()
	case actAwaitCanary:
		x.awaitCanary()
	case actCanaryLost:
		x.canaryLost()
	case actRollback:
		x.rollback(x.stuckReason())
	case actAwaitStep, actAnalyse:
		return x.stepOnRoute(ctx) // only for a weight the route carries (steproute.go)
	case actSupersede:
		x.supersede()
	case actAwaitRoll:
		x.awaitRoll()
	case actPromotionFailed:
		x.promotionFailed()
	case actFinalise:
		x.finalise()
	case actHeld:
		x.held()
	case actCmdPromote:
		x.commandPromote()
	case actCmdAbort:
		x.commandAbort()
	case actCmdRetry:
		x.commandRetry()
	case actCmdPause:
		x.commandPause()
	case actCmdResume:
		x.commandResume()
	case actCmdRefused:
		x.commandRefused("")
	default:
		x.impossible()
	}
	return nil
}
