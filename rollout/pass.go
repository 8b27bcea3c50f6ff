package rollout

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// Condition types of a Canary.
const (
	// ConditionPromoted is Flagger's condition: True once a revision is initialized or
	// promoted, Unknown while one is analysed or promoted, False after a rollback.
	ConditionPromoted = "Promoted"
	// ConditionReady says whether coalmine has what it needs to guard the target: the
	// Deployment, a router for the route kind, the Services and no reconcile error.
	ConditionReady = "Ready"
	// ConditionBareServices is True when Services that coalmine does not own select the
	// target's pods: traffic through them bypasses the split.
	ConditionBareServices = "BareServices"

	conditionPromoted     = ConditionPromoted
	conditionReady        = ConditionReady
	conditionBareServices = ConditionBareServices
)

// Event reasons, one per transition, step and failed check.
const (
	ReasonInitialized     = "Initialized"
	ReasonNewRevision     = "NewRevision"
	ReasonRevisionReplace = "RevisionReplaced"
	ReasonAdvance         = "Advance"
	ReasonFailedCheck     = "FailedCheck"
	ReasonRolledBack      = "RolledBack"
	ReasonPromoting       = "Promoting"
	ReasonSucceeded       = "Succeeded"
	ReasonReverted        = "Reverted"
	ReasonUnguarded       = "UnguardedChange"
	ReasonAdopted         = "AdoptedService"
	ReasonBareServices    = "BareServices"
	ReasonTerminating     = "Terminating"
	ReasonFinalized       = "Finalized"
	ReasonWaiting         = "WaitingForApproval"
	ReasonHookFailed      = "WebhookFailed"
)

// pass is one reconcile of one Canary: what it read, the status it builds, and the
// events and requeue it asks for.
type pass struct {
	r      *Reconciler
	canary *v1beta1.Canary
	status *v1beta1.CanaryStatus
	now    time.Time

	target *appsv1.Deployment
	app    map[string]string
	router router.Router
	kind   string // route kind
	rt     router.Target
	// routeSet: this pass wrote the route, so it exists.
	routeSet bool

	events   []pendingEvent
	results  []analysis.Result
	requeue  time.Duration
	notReady *notReady
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

// stamp is now as the API stores it (seconds), so a status read back compares equal.
func (x *pass) stamp() *metav1.Time {
	t := metav1.NewTime(x.now.Truncate(time.Second))
	return &t
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

// emit calls the post-rollout hooks and sends the events (to the API and to the event
// hooks) and metrics of a pass whose status is written.
func (x *pass) emit(ctx context.Context) {
	if x.postRollout {
		for _, h := range hooks.Of(x.canary, v1beta1.PostRolloutHook) {
			if err := x.hooks().Call(ctx, h, x.payload()); err != nil {
				x.event(corev1.EventTypeWarning, ReasonHookFailed, "PostRollout", "%s", hookError(h, err))
			}
		}
	}
	if x.r.Recorder != nil {
		for _, e := range x.events {
			x.r.Recorder.Eventf(x.canary, nil, e.typ, e.reason, e.action, "%s", e.note)
		}
	}
	x.sendEventHooks(ctx)
	recordChecks(x.canary, x.results)
	recordStatus(x.canary, x.status)
}

// sendEventHooks sends each event of the pass to the event hooks, in the background: a
// slow receiver must not hold the loop. Each call has the hook's own timeout.
func (x *pass) sendEventHooks(ctx context.Context) {
	evHooks := hooks.Of(x.canary, v1beta1.EventHook)
	if len(evHooks) == 0 || len(x.events) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	caller, logger := x.hooks(), log.FromContext(ctx)
	for _, e := range x.events {
		p := x.payload()
		p.Metadata = map[string]string{"eventMessage": e.note, "eventType": e.typ}
		for _, h := range evHooks {
			go func() {
				if err := caller.Call(ctx, h, p); err != nil {
					logger.Info("event webhook failed", "webhook", h.Name, "error", err.Error())
				}
			}()
		}
	}
}

// hooks is the webhook caller.
func (x *pass) hooks() hooks.Caller {
	if x.r.Hooks != nil {
		return x.r.Hooks
	}
	return defaultHooks
}

var defaultHooks = &hooks.HTTP{}

// payload is what the webhooks of this pass receive.
func (x *pass) payload() hooks.Payload {
	return hooks.Payload{Name: x.canary.Name, Namespace: x.canary.Namespace, Phase: x.status.Phase, Checksum: x.status.CanaryRevision}
}

// gateClosed calls the gates of type t (confirm-rollout, confirm-promotion) in order and
// says why the first one that did not answer 2xx is closed; "" when all are open.
func (x *pass) gateClosed(ctx context.Context, t v1beta1.HookType) string {
	for _, h := range hooks.Of(x.canary, t) {
		if err := x.hooks().Call(ctx, h, x.payload()); err != nil {
			return hookError(h, err)
		}
	}
	return ""
}

// failedHooks calls the hooks of type t (pre-rollout, rollout) and describes each that
// failed: each is a failed check.
func (x *pass) failedHooks(ctx context.Context, t v1beta1.HookType) []string {
	var failed []string
	for _, h := range hooks.Of(x.canary, t) {
		if err := x.hooks().Call(ctx, h, x.payload()); err != nil {
			failed = append(failed, hookError(h, err))
		}
	}
	return failed
}

// hookError names the hook that failed: "pre-rollout webhook smoke: ... answered 500".
func hookError(h *v1beta1.CanaryWebhook, err error) string {
	return fmt.Sprintf("%s webhook %s: %v", hooks.TypeOf(h), h.Name, err)
}

// rollbackRequested calls the rollback hooks: the name of the first that answers 2xx
// (a person or a system asked to roll back), or "".
func (x *pass) rollbackRequested(ctx context.Context) string {
	for _, h := range hooks.Of(x.canary, v1beta1.RollbackHook) {
		if x.hooks().Call(ctx, h, x.payload()) == nil {
			return h.Name
		}
	}
	return ""
}

func (x *pass) setCondition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&x.status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: x.canary.Generation, LastTransitionTime: *x.stamp(),
	})
}

// setPhase moves to phase p with message and keeps the Promoted condition in step, as
// Flagger does.
func (x *pass) setPhase(p v1beta1.CanaryPhase, message string) {
	if x.status.Phase != p {
		x.status.Phase = p
		x.status.LastTransitionTime = x.stamp()
	}
	x.status.Message = message
	switch p {
	case v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded:
		x.setCondition(conditionPromoted, metav1.ConditionTrue, string(p), message)
	case v1beta1.PhaseFailed:
		x.setCondition(conditionPromoted, metav1.ConditionFalse, string(p), message)
	case v1beta1.PhaseTerminating:
		// Leave Promoted as it was: the Canary is going away.
	default:
		x.setCondition(conditionPromoted, metav1.ConditionUnknown, string(p), message)
	}
}

func (x *pass) stop(reason, format string, args ...any) {
	x.notReady = &notReady{reason: reason, message: fmt.Sprintf(format, args...)}
}

// revision is the template revision of the target as it is now.
func (x *pass) revision() string { return v1beta1.TemplateRevision(&x.target.Spec.Template) }

// stableRevision is the target's stable-revision annotation (what the webhook compares
// with), else the one the status remembers, else the current template.
func (x *pass) stableRevision() string {
	if s := x.target.Annotations[v1beta1.AnnotationStableRevision]; s != "" {
		return s
	}
	if x.status.StableRevision != "" {
		return x.status.StableRevision
	}
	return x.revision()
}

func (x *pass) reconcile(ctx context.Context) error {
	c := x.canary
	if !controllerutil.ContainsFinalizer(c, v1beta1.Finalizer) {
		controllerutil.AddFinalizer(c, v1beta1.Finalizer)
		if err := x.r.Client.Update(ctx, c); err != nil {
			return fmt.Errorf("add finalizer: %w", err)
		}
	}
	if x.status.Phase == "" || x.status.Phase == v1beta1.PhaseTerminating {
		x.setPhase(v1beta1.PhaseInitializing, "initializing")
	}
	if err := x.load(ctx); err != nil || x.notReady != nil {
		return err
	}
	if err := x.ensureServices(ctx); err != nil || x.notReady != nil {
		return err
	}
	if err := x.reportBareServices(ctx); err != nil {
		return err
	}
	switch x.status.Phase {
	case v1beta1.PhaseInitializing:
		return x.initialize(ctx)
	case v1beta1.PhaseProgressing:
		return x.progress(ctx)
	case v1beta1.PhasePromoting, v1beta1.PhaseFinalising:
		return x.promote(ctx)
	default: // Initialized, Waiting, Succeeded, Failed
		return x.detect(ctx)
	}
}

// load reads the target, the router and the mesh. A missing piece stops the pass with
// Ready=False; the watches bring the Canary back when it appears.
func (x *pass) load(ctx context.Context) error {
	c := x.canary
	target := &appsv1.Deployment{}
	if err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: c.Spec.TargetRef.Name}, target); err != nil {
		if apierrors.IsNotFound(err) {
			x.stop("TargetNotFound", "Deployment %s not found", c.Spec.TargetRef.Name)
			return nil
		}
		return fmt.Errorf("get target deployment: %w", err)
	}
	x.target = target
	if other, err := x.r.olderCanaryOf(ctx, c); err != nil {
		return err
	} else if other != "" {
		// Two Canaries moving one Deployment would fight; the first one keeps it. The
		// requeue notices when it is gone (its deletion is no event for this Canary).
		x.stop("DuplicateTarget", "Deployment %s is already guarded by Canary %s", target.Name, other)
		x.requeueAfter(10 * time.Second)
		return nil
	}
	app, err := workload.AppLabels(target)
	if err != nil {
		x.stop("InvalidTarget", "Deployment %s: %v", target.Name, err)
		return nil
	}
	x.app = app
	kind := x.r.routeKind(c)
	x.kind = kind
	x.router = x.r.Routers[kind]
	if x.router == nil {
		x.stop("UnknownRouteKind", "no router for route kind %q", kind)
		return nil
	}
	mesh, err := x.r.meshName(ctx, c)
	if err != nil {
		return err
	}
	x.rt = routeTarget(c, mesh)
	return nil
}

func routeTarget(c *v1beta1.Canary, mesh string) router.Target {
	return router.Target{
		Namespace: c.Namespace, Apex: c.ApexName(), Primary: c.PrimaryName(), Canary: c.CanaryName(),
		Port: c.Spec.Service.Port, Mesh: mesh, CanaryName: c.Name,
	}
}

// ensureServices creates or corrects the apex, primary and canary Services, adopting a
// Service of the same name that no other controller owns.
func (x *pass) ensureServices(ctx context.Context) error {
	c := x.canary
	for _, desired := range workload.Services(c, x.app).All() {
		if err := controllerutil.SetControllerReference(c, desired, x.r.Client.Scheme()); err != nil {
			return fmt.Errorf("own service %s: %w", desired.Name, err)
		}
		existing := &corev1.Service{}
		err := x.r.Client.Get(ctx, client.ObjectKeyFromObject(desired), existing)
		if apierrors.IsNotFound(err) {
			if err := x.r.Client.Create(ctx, desired); err != nil {
				return fmt.Errorf("create service %s: %w", desired.Name, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("get service %s: %w", desired.Name, err)
		}
		changed := workload.UpdateService(existing, desired)
		if !metav1.IsControlledBy(existing, c) {
			if err := controllerutil.SetControllerReference(c, existing, x.r.Client.Scheme()); err != nil {
				x.stop("ServiceConflict", "Service %s is controlled by another object (%v); delete it or remove its controller reference", existing.Name, err)
				return nil
			}
			changed = true
			x.event(corev1.EventTypeNormal, ReasonAdopted, "Initialize", "Adopted Service %s: its selector now follows the canary rollout", existing.Name)
		}
		if changed {
			if err := x.r.Client.Update(ctx, existing); err != nil {
				return fmt.Errorf("update service %s: %w", existing.Name, err)
			}
		}
	}
	return nil
}

// reportBareServices sets BareServices: Services coalmine does not own that select the
// target's pods. Traffic through them bypasses the route, so the analysis never sees it
// and a rollback does not protect it. The webhook refuses new ones; this also catches
// those created while it was down.
func (x *pass) reportBareServices(ctx context.Context) error {
	var list corev1.ServiceList
	// Run on every pass: only the Services no Canary controls, uncopied (read-only).
	// Listing and copying every Service of the namespace was a third of the loop's CPU
	// with 200 canaries in one namespace (make bench). Services of another Canary are
	// that Canary's business, not a bypass of this one.
	if err := x.r.Client.List(ctx, &list, client.InNamespace(x.canary.Namespace),
		client.MatchingFields{IndexServiceController: NoCanary}, client.UnsafeDisableDeepCopy); err != nil {
		return fmt.Errorf("list services: %w", err)
	}
	var bare []string
	for _, svc := range list.Items {
		if workload.SelectsAll(svc.Spec.Selector, x.target.Spec.Template.Labels) {
			bare = append(bare, svc.Name)
		}
	}
	if len(bare) == 0 {
		x.setCondition(conditionBareServices, metav1.ConditionFalse, "NoBareServices",
			fmt.Sprintf("no other Service selects the pods of Deployment %s", x.target.Name))
		return nil
	}
	msg := fmt.Sprintf("Services %s select the pods of Deployment %s: their traffic bypasses the canary split; call Service %s instead and delete them",
		strings.Join(bare, ", "), x.target.Name, x.canary.ApexName())
	if old := meta.FindStatusCondition(x.status.Conditions, conditionBareServices); old == nil || old.Message != msg {
		x.event(corev1.EventTypeWarning, ReasonBareServices, "Check", "%s", msg)
	}
	x.setCondition(conditionBareServices, metav1.ConditionTrue, "BareServicesFound", msg)
	return nil
}

// updateTarget applies mutate to a copy of the target and writes it if anything changed.
func (x *pass) updateTarget(ctx context.Context, mutate func(d *appsv1.Deployment)) error {
	d := x.target.DeepCopy()
	mutate(d)
	if equality.Semantic.DeepEqual(d, x.target) {
		return nil
	}
	if err := x.r.Client.Update(ctx, d); err != nil {
		return fmt.Errorf("update deployment %s: %w", d.Name, err)
	}
	x.target = d
	return nil
}

func setAnnotation(d *appsv1.Deployment, k, v string) {
	if d.Annotations == nil {
		d.Annotations = map[string]string{}
	}
	d.Annotations[k] = v
}

func setManaged(d *appsv1.Deployment) {
	if d.Labels == nil {
		d.Labels = map[string]string{}
	}
	d.Labels[v1beta1.LabelManaged] = "true"
}

// initialize routes everything to primary and marks the target as managed. The stable
// revision is the current template, unless the Deployment is already held mid-change
// (paused with a stable annotation that differs): then the annotated stable one stands and
// the change is analysed right away.
func (x *pass) initialize(ctx context.Context) error {
	if err := x.setWeights(ctx, 0); err != nil {
		return fmt.Errorf("route all traffic to primary: %w", err)
	}
	cur := x.revision()
	stable := cur
	if s := x.target.Annotations[v1beta1.AnnotationStableRevision]; s != "" && s != cur && x.target.Spec.Paused {
		stable = s
	}
	if err := x.updateTarget(ctx, func(d *appsv1.Deployment) {
		setManaged(d)
		setAnnotation(d, v1beta1.AnnotationStableRevision, stable)
	}); err != nil {
		return err
	}
	x.status.StableRevision = stable
	x.status.CanaryWeight = 0
	x.setPhase(v1beta1.PhaseInitialized, fmt.Sprintf("stable revision %s serves all traffic", stable))
	x.event(corev1.EventTypeNormal, ReasonInitialized, "Initialize",
		"Initialized: Services %s, %s and %s, all traffic to %s, stable revision %s",
		x.rt.Apex, x.rt.Primary, x.rt.Canary, x.rt.Primary, stable)
	return x.detect(ctx)
}

// healTarget puts back the label and annotation the webhook depends on, should an apply
// have removed them.
func (x *pass) healTarget(ctx context.Context) error {
	// Nearly always in place: skip updateTarget's copy and comparison of the whole
	// Deployment, which every pass would pay.
	if x.target.Labels[v1beta1.LabelManaged] == "true" && x.target.Annotations[v1beta1.AnnotationStableRevision] != "" {
		return nil
	}
	stable := x.stableRevision()
	return x.updateTarget(ctx, func(d *appsv1.Deployment) {
		setManaged(d)
		if d.Annotations[v1beta1.AnnotationStableRevision] == "" {
			setAnnotation(d, v1beta1.AnnotationStableRevision, stable)
		}
	})
}

// ensureRoute recreates a missing route at weight w. It never rewrites an existing route:
// outside a step a route edited by hand is left alone until the next step.
func (x *pass) ensureRoute(ctx context.Context, w int) error {
	if x.routeSet {
		return nil
	}
	found, err := x.routeExists(ctx)
	if err != nil {
		return fmt.Errorf("read route: %w", err)
	}
	if found {
		return nil
	}
	log.FromContext(ctx).Info("route missing, recreating", "weight", w)
	if err := x.setWeights(ctx, w); err != nil {
		return fmt.Errorf("recreate route: %w", err)
	}
	return nil
}

// routeExists reads the route's metadata from the cache where this cluster holds the
// routes, else asks the router (the Global control plane's cluster).
func (x *pass) routeExists(ctx context.Context) (bool, error) {
	if !x.r.cachedRoutes[x.kind] {
		_, found, err := x.router.Weights(ctx, x.rt)
		return found, err
	}
	obj := x.router.Object(x.rt)
	if err := x.r.Client.Get(ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// setWeights routes w% to the canary.
func (x *pass) setWeights(ctx context.Context, w int) error {
	if err := x.router.SetWeights(ctx, x.rt, w); err != nil {
		return err
	}
	x.routeSet = true
	return nil
}

// detect is the steady state (Initialized, Succeeded, Failed): it starts a canary for a new
// revision, ends a failed one when the template went back to stable, and otherwise waits.
func (x *pass) detect(ctx context.Context) error {
	if err := x.healTarget(ctx); err != nil {
		return err
	}
	cur, stable := x.revision(), x.stableRevision()
	x.status.StableRevision = stable
	switch {
	case cur == stable:
		// The webhook annotates the revision it held; if that is no longer the template,
		// the held change was reverted before it was analysed.
		held := x.target.Spec.Paused && x.target.Annotations[v1beta1.AnnotationRevision] != "" &&
			x.target.Annotations[v1beta1.AnnotationRevision] != cur
		if x.status.Phase == v1beta1.PhaseFailed || held {
			if err := x.unpauseReverted(ctx, cur); err != nil {
				return err
			}
			x.status.FailedRevision = ""
			x.status.CanaryWeight = 0
			msg := fmt.Sprintf("template reverted to stable revision %s; nothing rolled", stable)
			x.setPhase(v1beta1.PhaseSucceeded, msg)
			x.event(corev1.EventTypeNormal, ReasonReverted, "Revert", "Deployment %s reverted to stable revision %s: nothing rolled", x.target.Name, stable)
		}
		return x.ensureRoute(ctx, 0)
	case cur == x.status.FailedRevision:
		// Re-applied failed revision: stay rolled back until a new revision or a revert.
		if !x.target.Spec.Paused {
			if err := x.updateTarget(ctx, func(d *appsv1.Deployment) { d.Spec.Paused = true }); err != nil {
				return err
			}
			x.event(corev1.EventTypeWarning, ReasonUnguarded, "Rollback",
				"Deployment %s was unpaused on failed revision %s; paused it again", x.target.Name, cur)
		}
		if x.status.Phase != v1beta1.PhaseFailed {
			x.setPhase(v1beta1.PhaseFailed, fmt.Sprintf("revision %s failed before; waiting for a new revision or a revert", cur))
		}
		return x.ensureRoute(ctx, 0)
	default:
		return x.start(ctx, cur)
	}
}

// start begins the analysis of revision cur: canary Deployment, weight 0, counters reset.
func (x *pass) start(ctx context.Context, cur string) error {
	if !x.target.Spec.Paused {
		// The webhook pauses every template change of a managed Deployment; one that got
		// through (webhook missing or bypassed) is held now. Pods already rolled stay.
		if err := x.updateTarget(ctx, func(d *appsv1.Deployment) { d.Spec.Paused = true }); err != nil {
			return err
		}
		x.event(corev1.EventTypeWarning, ReasonUnguarded, "Analyse",
			"Deployment %s changed to revision %s without being paused (is coalmine's webhook installed?); paused it now", x.target.Name, cur)
	}
	x.status.CanaryRevision = cur
	if why := x.gateClosed(ctx, v1beta1.ConfirmRolloutHook); why != "" {
		// Flagger's manual gate: nothing starts, the gate is asked again each interval.
		if x.status.Phase != v1beta1.PhaseWaiting {
			x.event(corev1.EventTypeNormal, ReasonWaiting, "Analyse", "Halt: revision %s waits for approval: %s", cur, why)
		}
		x.setPhase(v1beta1.PhaseWaiting, fmt.Sprintf("revision %s waits for approval: %s", cur, why))
		x.requeueAfter(x.canary.AnalysisInterval())
		return nil
	}
	if _, err := x.ensureCanaryDeployment(ctx, cur); err != nil {
		return err
	}
	stable := x.stableRevision()
	x.resetProgress(cur)
	x.setPhase(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s: waiting for Deployment %s to be ready", cur, x.canary.CanaryDeploymentName()))
	x.event(corev1.EventTypeNormal, ReasonNewRevision, "Analyse", "New revision %s detected (stable %s): starting canary analysis", cur, stable)
	x.requeueAfter(min(x.canary.AnalysisInterval(), x.canary.ProgressDeadline()))
	return nil
}

func (x *pass) resetProgress(rev string) {
	x.status.CanaryRevision = rev
	x.status.CanaryWeight = 0
	x.status.FailedChecks = 0
	x.status.Iterations = 0
	x.status.ProgressStartTime = x.stamp()
	x.status.LastStepTime = nil
	x.status.Metrics = nil
}

// ensureCanaryDeployment creates the canary Deployment for revision rev or brings an
// existing one to it.
func (x *pass) ensureCanaryDeployment(ctx context.Context, rev string) (*appsv1.Deployment, error) {
	c := x.canary
	desired, err := workload.CanaryDeployment(x.target, c.CanaryDeploymentName(), rev)
	if err != nil {
		return nil, fmt.Errorf("build canary deployment: %w", err)
	}
	if err := controllerutil.SetControllerReference(c, desired, x.r.Client.Scheme()); err != nil {
		return nil, fmt.Errorf("own canary deployment: %w", err)
	}
	existing := &appsv1.Deployment{}
	err = x.r.Client.Get(ctx, client.ObjectKeyFromObject(desired), existing)
	if apierrors.IsNotFound(err) {
		if err := x.r.Client.Create(ctx, desired); err != nil {
			return nil, fmt.Errorf("create canary deployment: %w", err)
		}
		return desired, nil
	}
	if err != nil {
		return nil, fmt.Errorf("get canary deployment: %w", err)
	}
	if !metav1.IsControlledBy(existing, c) {
		return nil, fmt.Errorf("deployment %s exists and is not owned by Canary %s", existing.Name, c.Name)
	}
	if !existing.DeletionTimestamp.IsZero() {
		// The previous canary is still going away; create the new one once it is gone.
		return nil, fmt.Errorf("canary deployment %s is being deleted: %w", existing.Name, errCacheLag)
	}
	if workload.UpdateCanaryDeployment(existing, desired) {
		if err := x.r.Client.Update(ctx, existing); err != nil {
			if apierrors.IsNotFound(err) {
				// Deleted since the cache saw it (a rollback's delete): create it next pass.
				return nil, fmt.Errorf("update canary deployment: %w", errCacheLag)
			}
			return nil, fmt.Errorf("update canary deployment: %w", err)
		}
	}
	return existing, nil
}

func (x *pass) deleteCanaryDeployment(ctx context.Context) error {
	d := &appsv1.Deployment{}
	err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: x.canary.Namespace, Name: x.canary.CanaryDeploymentName()}, d)
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("get canary deployment: %w", err)
	}
	if !metav1.IsControlledBy(d, x.canary) {
		return nil
	}
	if err := x.r.Client.Delete(ctx, d, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete canary deployment: %w", err)
	}
	return nil
}

// progress drives a running analysis: readiness, steps, checks, rollback, promotion.
func (x *pass) progress(ctx context.Context) error {
	if err := x.healTarget(ctx); err != nil {
		return err
	}
	c := x.canary
	cur, stable := x.revision(), x.stableRevision()
	switch {
	case cur == stable:
		return x.revert(ctx)
	case cur != x.status.CanaryRevision && cur == x.status.FailedRevision:
		if err := x.abort(ctx); err != nil {
			return err
		}
		x.setPhase(v1beta1.PhaseFailed, fmt.Sprintf("revision %s failed before; waiting for a new revision or a revert", cur))
		x.event(corev1.EventTypeWarning, ReasonRolledBack, "Rollback", "Revision %s replaced %s but failed before: not analysed again", cur, x.status.CanaryRevision)
		return nil
	case cur != x.status.CanaryRevision:
		return x.restart(ctx, cur, "")
	}

	canary, err := x.ensureCanaryDeployment(ctx, cur)
	if err != nil {
		return err
	}
	rd := workload.DeploymentReadiness(canary, c.CanaryReadyThreshold())
	if rd.Failed {
		return x.rollback(ctx, rd.Message)
	}
	if !rd.Ready {
		if x.status.ProgressStartTime == nil {
			x.status.ProgressStartTime = x.stamp()
		}
		deadline := x.status.ProgressStartTime.Add(c.ProgressDeadline())
		if !x.now.Before(deadline) {
			return x.rollback(ctx, fmt.Sprintf("canary Deployment %s not ready within the progress deadline of %s (%s)",
				canary.Name, c.ProgressDeadline(), rd.Message))
		}
		// Its readiness changes start the next pass (see deploymentHandler); the requeue
		// is for the deadline, and a slow safety net.
		log.FromContext(ctx).V(1).Info("waiting for canary", "reason", rd.Message)
		x.requeueAfter(min(deadline.Sub(x.now), readinessPoll(c)))
		return nil
	}
	x.status.ProgressStartTime = nil

	if c.Spec.SkipAnalysis {
		return x.startPromotion(ctx, "analysis skipped (spec.skipAnalysis)")
	}
	if x.status.LastStepTime == nil {
		// Pre-rollout hooks (a smoke test, say) before the canary gets any traffic; each
		// failure is a failed check.
		if failed := x.failedHooks(ctx, v1beta1.PreRolloutHook); len(failed) > 0 {
			return x.failedCheck(ctx, failed)
		}
		return x.step(ctx, firstStep(c.Steps()), "canary ready")
	}
	due := x.status.LastStepTime.Add(c.AnalysisInterval())
	if x.now.Before(due) {
		x.requeueAfter(due.Sub(x.now))
		return nil
	}
	return x.analyse(ctx)
}

// readinessPoll is how often a pass waiting for a Deployment to become ready looks again
// without being woken by the Deployment's own status change: ten analysis intervals, at
// least 30 s. Polling each interval was most of the passes with hundreds of canaries
// waiting for the cluster to run their pods (make bench).
func readinessPoll(c *v1beta1.Canary) time.Duration {
	return max(10*c.AnalysisInterval(), 30*time.Second)
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

// restart points the analysis at a newer revision: the canary takes the new template,
// weight goes back to 0 and the counters reset (Flagger: a new revision restarts).
func (x *pass) restart(ctx context.Context, cur, why string) error {
	if _, err := x.ensureCanaryDeployment(ctx, cur); err != nil {
		return err
	}
	if err := x.setWeights(ctx, 0); err != nil {
		return fmt.Errorf("route all traffic to primary: %w", err)
	}
	prev := x.status.CanaryRevision
	x.resetProgress(cur)
	x.setPhase(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s: waiting for Deployment %s to be ready", cur, x.canary.CanaryDeploymentName()))
	x.event(corev1.EventTypeNormal, ReasonRevisionReplace, "Analyse", "New revision %s replaces %s%s, analysis restarted", cur, prev, why)
	x.requeueAfter(min(x.canary.AnalysisInterval(), x.canary.ProgressDeadline()))
	return nil
}

// step sets the canary weight to w.
func (x *pass) step(ctx context.Context, w int, why string) error {
	if err := x.setWeights(ctx, w); err != nil {
		return fmt.Errorf("set canary weight %d: %w", w, err)
	}
	x.status.CanaryWeight = w
	x.status.LastStepTime = x.stamp()
	x.setPhase(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s at canary weight %d%%", x.status.CanaryRevision, w))
	x.event(corev1.EventTypeNormal, ReasonAdvance, "Advance", "Advance canary weight to %d%% (%s)", w, why)
	x.requeueAfter(x.canary.AnalysisInterval())
	return nil
}

// analyse runs the checks of one interval. Any failed, missing or errored metric is one
// failed check (Flagger counts one per interval, cumulative for the revision); at the
// threshold the revision is rolled back. All passed: next step, or promotion after the last.
func (x *pass) analyse(ctx context.Context) error {
	c := x.canary
	if name := x.rollbackRequested(ctx); name != "" {
		return x.rollback(ctx, fmt.Sprintf("rollback requested by webhook %s", name))
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
		default:
			passed = append(passed, fmt.Sprintf("%s %s", res.Metric, formatValue(res.Value)))
		}
	}
	if len(failed) > 0 {
		return x.failedCheck(ctx, failed)
	}
	why := "all checks passed"
	if len(passed) > 0 {
		why = "passed: " + strings.Join(passed, ", ")
	}
	next := nextStep(c.Steps(), x.status.CanaryWeight)
	if next < 0 {
		// Flagger's confirm-promotion gate: the analysis goes on at the maximum weight
		// until it opens.
		if closed := x.gateClosed(ctx, v1beta1.ConfirmPromotionHook); closed != "" {
			const waiting = "promotion waits for approval"
			if !strings.Contains(x.canary.Status.Message, waiting) {
				x.event(corev1.EventTypeNormal, ReasonWaiting, "Promote", "Halt: revision %s passed the analysis; %s: %s", x.status.CanaryRevision, waiting, closed)
			}
			x.setPhase(v1beta1.PhaseProgressing, fmt.Sprintf("revision %s passed the analysis at the maximum weight %d%%; %s: %s",
				x.status.CanaryRevision, x.status.CanaryWeight, waiting, closed))
			x.requeueAfter(c.AnalysisInterval())
			return nil
		}
		return x.startPromotion(ctx, fmt.Sprintf("analysis passed at the maximum weight %d%% (%s)", x.status.CanaryWeight, why))
	}
	return x.step(ctx, next, why)
}

// failedCheck counts one failed check (Flagger counts one per interval, whatever failed,
// cumulative for the revision) and rolls back at the threshold.
func (x *pass) failedCheck(ctx context.Context, failed []string) error {
	c := x.canary
	for _, d := range failed {
		x.event(corev1.EventTypeWarning, ReasonFailedCheck, "Analyse", "Halt advancement at weight %d%%: %s", x.status.CanaryWeight, d)
	}
	x.status.FailedChecks++
	if x.status.FailedChecks >= c.Threshold() {
		return x.rollback(ctx, fmt.Sprintf("%d failed checks reached the threshold of %d; last: %s",
			x.status.FailedChecks, c.Threshold(), strings.Join(failed, "; ")))
	}
	x.setPhase(v1beta1.PhaseProgressing, fmt.Sprintf("analysing revision %s at canary weight %d%%: %d of %d failed checks; last: %s",
		x.status.CanaryRevision, x.status.CanaryWeight, x.status.FailedChecks, c.Threshold(), strings.Join(failed, "; ")))
	x.requeueAfter(c.AnalysisInterval())
	return nil
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

// formatValue prints a metric value with at most three decimals; NaN (no value) is empty.
func formatValue(v float64) string {
	if math.IsNaN(v) {
		return ""
	}
	return strconv.FormatFloat(math.Round(v*1000)/1000, 'f', -1, 64)
}

// describe says what a failed check was: metric, value, threshold and the analyzer's word.
// The analyzer's message of a failed value already says all three ("request-success-rate
// 87.5 < 99").
func describe(c *v1beta1.Canary, res analysis.Result) string {
	if res.Outcome == v1beta1.MetricFailed && res.Message != "" {
		return res.Message
	}
	var b strings.Builder
	b.WriteString(res.Metric)
	switch res.Outcome {
	case v1beta1.MetricNoData:
		b.WriteString(": no data")
	case v1beta1.MetricError:
		b.WriteString(": query error")
	default:
		fmt.Fprintf(&b, " = %s", formatValue(res.Value))
	}
	if t := thresholdOf(c, res.Metric); t != "" {
		fmt.Fprintf(&b, " (threshold %s)", t)
	}
	if res.Message != "" {
		b.WriteString(": " + res.Message)
	}
	return b.String()
}

// thresholdOf describes the accepted values of a metric of the spec.
func thresholdOf(c *v1beta1.Canary, name string) string {
	if c.Spec.Analysis == nil {
		return ""
	}
	for _, m := range c.Spec.Analysis.Metrics {
		if m.Name != name {
			continue
		}
		if r := m.ThresholdRange; r != nil {
			lo, hi := "-inf", "+inf"
			if r.Min != nil {
				lo = formatValue(*r.Min)
			}
			if r.Max != nil {
				hi = formatValue(*r.Max)
			}
			return fmt.Sprintf("[%s, %s]", lo, hi)
		}
		if m.Name == v1beta1.MetricRequestSuccessRate && m.TemplateRef == nil {
			return ">= " + formatValue(m.Threshold)
		}
		return "<= " + formatValue(m.Threshold)
	}
	return ""
}

// abort routes everything back to primary and removes the canary Deployment.
func (x *pass) abort(ctx context.Context) error {
	if err := x.setWeights(ctx, 0); err != nil {
		return fmt.Errorf("route all traffic to primary: %w", err)
	}
	if err := x.deleteCanaryDeployment(ctx); err != nil {
		return err
	}
	x.status.CanaryWeight = 0
	x.status.ProgressStartTime = nil
	return nil
}

// rollback ends the revision as failed. The target stays paused on it, so its pods stay
// on the stable ReplicaSet until a new revision or a revert.
func (x *pass) rollback(ctx context.Context, reason string) error {
	if err := x.abort(ctx); err != nil {
		return err
	}
	if !x.target.Spec.Paused {
		if err := x.updateTarget(ctx, func(d *appsv1.Deployment) { d.Spec.Paused = true }); err != nil {
			return err
		}
	}
	rev := x.status.CanaryRevision
	x.status.FailedRevision = rev
	x.postRollout = true
	x.setPhase(v1beta1.PhaseFailed, fmt.Sprintf("revision %s rolled back: %s", rev, reason))
	x.event(corev1.EventTypeWarning, ReasonRolledBack, "Rollback",
		"Canary failed, revision %s rolled back: %s. Deployment %s stays paused on stable revision %s",
		rev, reason, x.target.Name, x.stableRevision())
	return nil
}

// revert ends an analysis whose revision was replaced by the stable one: nothing rolls.
func (x *pass) revert(ctx context.Context) error {
	if err := x.abort(ctx); err != nil {
		return err
	}
	stable := x.stableRevision()
	if err := x.unpauseReverted(ctx, stable); err != nil {
		return err
	}
	x.status.FailedRevision = ""
	x.setPhase(v1beta1.PhaseSucceeded, fmt.Sprintf("template reverted to stable revision %s; nothing rolled", stable))
	x.event(corev1.EventTypeNormal, ReasonReverted, "Revert",
		"Deployment %s reverted to stable revision %s: revision %s abandoned, nothing rolled", x.target.Name, stable, x.status.CanaryRevision)
	return nil
}

// unpauseReverted releases a target whose template went back to the stable revision cur.
// The revision annotation follows, so the Deployment no longer looks held by the webhook
// and a later manual pause is left alone.
func (x *pass) unpauseReverted(ctx context.Context, cur string) error {
	return x.updateTarget(ctx, func(d *appsv1.Deployment) {
		d.Spec.Paused = false
		if d.Annotations[v1beta1.AnnotationRevision] != "" {
			setAnnotation(d, v1beta1.AnnotationRevision, cur)
		}
	})
}

// startPromotion hands the revision to the target: stable-revision and unpause in one
// update, so the webhook (which lets coalmine's own identity through) never sees a
// half-promoted Deployment; its own rolling update then runs the new template.
func (x *pass) startPromotion(ctx context.Context, why string) error {
	rev := x.status.CanaryRevision
	if err := x.promoteTarget(ctx, rev); err != nil {
		return err
	}
	x.status.ProgressStartTime = x.stamp()
	x.setPhase(v1beta1.PhasePromoting, fmt.Sprintf("promoting revision %s: Deployment %s rolls it out", rev, x.target.Name))
	x.event(corev1.EventTypeNormal, ReasonPromoting, "Promote", "Promoting revision %s, %s: Deployment %s unpaused", rev, why, x.target.Name)
	x.requeueAfter(x.canary.AnalysisInterval())
	return nil
}

func (x *pass) promoteTarget(ctx context.Context, rev string) error {
	return x.updateTarget(ctx, func(d *appsv1.Deployment) {
		setManaged(d)
		setAnnotation(d, v1beta1.AnnotationStableRevision, rev)
		d.Spec.Paused = false
	})
}

// promote waits for the target to roll the promoted revision, then moves traffic back to
// primary, at once or stepWeightPromotion per interval (Finalising).
func (x *pass) promote(ctx context.Context) error {
	c := x.canary
	rev := x.status.CanaryRevision
	if cur := x.revision(); cur != rev {
		// A newer revision arrived while rev was rolling: the webhook paused the target
		// on it. rev is the stable revision now; analyse the newcomer from weight 0.
		x.status.LastPromotedRevision = rev
		x.status.StableRevision = rev
		x.status.FailedRevision = ""
		return x.restart(ctx, cur, fmt.Sprintf(" while %s was being promoted (%s is stable now)", rev, rev))
	}
	if x.target.Annotations[v1beta1.AnnotationStableRevision] != rev || x.target.Spec.Paused || x.target.Labels[v1beta1.LabelManaged] != "true" {
		if err := x.promoteTarget(ctx, rev); err != nil {
			return err
		}
	}
	if x.status.Phase == v1beta1.PhaseFinalising {
		if last := x.status.LastStepTime; last != nil {
			if due := last.Add(c.AnalysisInterval()); x.now.Before(due) {
				x.requeueAfter(due.Sub(x.now))
				return nil
			}
		}
		return x.shiftToPrimary(ctx)
	}
	rd := workload.DeploymentReadiness(x.target, c.PrimaryReadyThreshold())
	if !rd.Ready {
		log.FromContext(ctx).V(1).Info("waiting for target rollout", "reason", rd.Message)
		x.requeueAfter(readinessPoll(c))
		return nil
	}
	if c.Spec.Analysis != nil && c.Spec.Analysis.StepWeightPromotion > 0 && x.status.CanaryWeight > 0 {
		return x.shiftToPrimary(ctx)
	}
	return x.complete(ctx)
}

// shiftToPrimary moves stepWeightPromotion of the traffic back to primary.
func (x *pass) shiftToPrimary(ctx context.Context) error {
	w := x.status.CanaryWeight
	if x.canary.Spec.Analysis != nil {
		w -= x.canary.Spec.Analysis.StepWeightPromotion
	}
	if w <= 0 || x.canary.Spec.Analysis == nil {
		return x.complete(ctx)
	}
	if err := x.setWeights(ctx, w); err != nil {
		return fmt.Errorf("set canary weight %d: %w", w, err)
	}
	x.status.CanaryWeight = w
	x.status.LastStepTime = x.stamp()
	x.setPhase(v1beta1.PhaseFinalising, fmt.Sprintf("revision %s rolled out: shifting traffic to primary, canary weight %d%%", x.status.CanaryRevision, w))
	x.event(corev1.EventTypeNormal, ReasonAdvance, "Promote", "Advance primary weight to %d%%", 100-w)
	x.requeueAfter(x.canary.AnalysisInterval())
	return nil
}

// complete routes everything to primary, removes the canary and records the promotion.
func (x *pass) complete(ctx context.Context) error {
	if err := x.abort(ctx); err != nil {
		return err
	}
	rev := x.status.CanaryRevision
	x.status.LastPromotedRevision = rev
	x.status.StableRevision = rev
	x.status.FailedRevision = ""
	x.postRollout = true
	x.setPhase(v1beta1.PhaseSucceeded, fmt.Sprintf("revision %s promoted", rev))
	x.event(corev1.EventTypeNormal, ReasonSucceeded, "Promote",
		"Promotion completed: revision %s is stable, all traffic to %s", rev, x.rt.Primary)
	return nil
}
