package chaos

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The apps' Canary: Flagger-compatible, the seed's metrics with shorter windows, and a
// threshold that tolerates one Prometheus outage window (promOutage / interval failed
// checks) plus the first check after a restart, so a good release still ends Succeeded.
const (
	meshName       = "mesh-a"
	appReplicas    = 2
	interval       = 2 * time.Second
	threshold      = 8
	stepWeight     = 10
	maxWeight      = 30
	metricWindow   = 15 * time.Second
	simulatorRPS   = 100
	port           = 8080
	fieldManager   = "chaos-gitops"
	releaseEnv     = "CHAOS_RELEASE"
	touchKey       = "chaos.coalmine.dev/touch"
	badErrorRate   = "0.5"
	badLatencyMs   = "1500"
	goodLatencyMs  = "20"
	latencyMaxMs   = 500
	successMinPerc = 99
)

// cooldown: a good release shipped after a rolled-back one waits until the bad canary's
// samples have left the metric window (and the remote-write lag), or its first checks
// would count the previous release's errors. The seed's queries look back; kept on
// purpose (README "What make demo shows").
const cooldown = metricWindow + 8*time.Second

// scenario kinds.
type kind string

const (
	kGood       kind = "good"
	kBadErrors  kind = "bad-errors"
	kBadLatency kind = "bad-latency"
	kSupersede  kind = "new-revision-mid-analysis"
	kRevertMid  kind = "revert-mid-analysis"
	kBadRevert  kind = "bad-then-revert"
	kDelete     kind = "delete-recreate"
	// kDeleteInOutage deletes a TrafficRoute app's Canary mid-analysis during an outage
	// of the Global CP (where the route lives).
	kDeleteInOutage kind = "delete-during-mesh-outage"
)

var allKinds = []kind{kGood, kBadErrors, kSupersede, kBadRevert, kBadLatency, kRevertMid, kDelete}

// appRef names one app: Deployment and Canary <name> in namespace <ns>.
type appRef struct {
	idx       int
	ns, name  string
	routeKind string
}

func (a *appRef) String() string { return a.ns + "/" + a.name }

// routeName is where the app's route lives: TrafficRoute <apex>.<namespace> on the
// Global CP, MeshHTTPRoute <apex>-coalmine in the namespace (NOTES.md).
func (a *appRef) routeName() string {
	if a.routeKind == coalminev1beta1.RouteKindMeshHTTPRoute {
		return a.name + "-coalmine"
	}
	return a.name + "." + a.ns
}

func (a *appRef) canaryTag() string {
	return fmt.Sprintf("%s-canary_%s_svc_%d", a.name, a.ns, port)
}

// spec is a release's behaviour in the simulator.
type spec struct {
	id          string // CHAOS_RELEASE, unique per release
	errorRate   string
	latencyMs   string
	description string
}

func (a *appRef) deployment(s spec) *appsv1.Deployment {
	labels := map[string]string{"app": a.name}
	replicas := int32(appReplicas)
	env := []corev1.EnvVar{{Name: releaseEnv, Value: s.id}, {Name: "SIM_LATENCY_MS", Value: s.latencyMs}}
	if s.errorRate != "" {
		env = append(env, corev1.EnvVar{Name: "SIM_ERROR_RATE", Value: s.errorRate})
	}
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: a.name, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name:  "app",
					Image: "ghcr.io/coalmine-dev/chaos-app:" + strings.ReplaceAll(s.id, "/", "-"),
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: port, Protocol: corev1.ProtocolTCP}},
					Env:   env,
				}}},
			},
		},
	}
	sandbox.SchedulableOnFakeNode(&d.Spec.Template.Spec)
	return d
}

func (a *appRef) canary() *coalminev1beta1.Canary {
	proto := &coalminev1beta1.CustomMetadata{Annotations: map[string]string{fmt.Sprintf("%d.service.kuma.io/protocol", port): "http"}}
	ann := map[string]string{coalminev1beta1.AnnotationMesh: meshName}
	if a.routeKind == coalminev1beta1.RouteKindMeshHTTPRoute {
		ann[coalminev1beta1.AnnotationRouteKind] = a.routeKind
	}
	return &coalminev1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Namespace: a.ns, Name: a.name, Annotations: ann},
		Spec: coalminev1beta1.CanarySpec{
			TargetRef: coalminev1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: a.name},
			Service: coalminev1beta1.CanaryService{
				Port: port, TargetPort: intstr.FromString("http"), PortName: "http",
				Apex: proto, Primary: proto, Canary: proto,
			},
			Analysis: &coalminev1beta1.CanaryAnalysis{
				Interval: interval.String(), Threshold: threshold, MaxWeight: maxWeight, StepWeight: stepWeight,
				Metrics: []coalminev1beta1.CanaryMetric{
					{Name: coalminev1beta1.MetricRequestSuccessRate, Threshold: successMinPerc, Interval: metricWindow.String()},
					{Name: coalminev1beta1.MetricRequestDuration, Threshold: latencyMaxMs, Interval: metricWindow.String()},
				},
			},
		},
	}
}

// driver plays the app teams: each app ships a seeded sequence of scenarios through the
// apiserver (server-side apply, as Flux does) and waits for the observer to see the
// outcome before the next.
type driver struct {
	w    *world
	obs  *observer
	adm  *admissions
	seed uint64
	logf func(string, ...any)
	// enough says the run has shipped and disrupted enough: no new scenario starts.
	enough  func() bool
	shipped atomic.Int64
	apps    []*appState
	// meshOutages carries requests for an outage of the Global CP (outageLoop serves them).
	meshOutages chan *outageRequest
	outagesOver chan struct{} // closed when the outage loop has done all its outages
}

// appState is what the app's team knows: its stable release (what its pods run), whether
// the Deployment holds a rolled-back revision, and when the last bad canary ended.
type appState struct {
	ref        *appRef
	rng        *rand.Rand
	n          int // releases made
	stable     spec
	holdsBad   bool
	lastBadEnd time.Time
	scenarios  int
	plan       []kind          // first scenarios, fixed so a short run covers every kind
	specs      map[string]spec // every release shipped, by template revision
}

func newDriver(w *world, obs *observer, adm *admissions, seed uint64, apps int, logf func(string, ...any)) *driver {
	d := &driver{w: w, obs: obs, adm: adm, seed: seed, logf: logf, meshOutages: make(chan *outageRequest, apps), outagesOver: make(chan struct{})}
	for i := 0; i < apps; i++ {
		ref := &appRef{idx: i, ns: fmt.Sprintf("chaos-%02d", i), name: fmt.Sprintf("app%02d", i), routeKind: coalminev1beta1.RouteKindTrafficRoute}
		if i%2 == 1 {
			ref.routeKind = coalminev1beta1.RouteKindMeshHTTPRoute
		}
		a := &appState{ref: ref, rng: rand.New(rand.NewPCG(seed, uint64(i)+1)), specs: map[string]spec{}}
		// The first two scenarios of the apps go round the kinds, offset by the seed.
		off := int(seed % uint64(len(allKinds)))
		a.plan = []kind{allKinds[(2*i+off)%len(allKinds)], allKinds[(2*i+1+off)%len(allKinds)]}
		if i == 0 {
			// App 0 (TrafficRoute) starts with a deletion during the first Global CP outage.
			a.plan[0] = kDeleteInOutage
		}
		d.apps = append(d.apps, a)
	}
	return d
}

func (d *driver) refs() []*appRef {
	out := make([]*appRef, len(d.apps))
	for i, a := range d.apps {
		out[i] = a.ref
	}
	return out
}

// initApp creates the app's namespace, Deployment and Canary and waits until Initialized.
func (d *driver) initApp(ctx context.Context, a *appState) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:        a.ref.ns,
		Labels:      map[string]string{coalminev1beta1.LabelSidecarInjection: "enabled"},
		Annotations: map[string]string{coalminev1beta1.AnnotationMesh: meshName},
	}}
	if err := d.w.zc.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", a.ref.ns, err)
	}
	a.stable = d.newSpec(a, kGood)
	d.obs.expectInitial(a.ref, a.stable.id)
	stored, err := d.applyDeployment(ctx, a, a.stable)
	if err != nil {
		return err
	}
	a.specs[coalminev1beta1.TemplateRevision(&stored.Spec.Template)] = a.stable
	return d.createCanary(ctx, a)
}

func (d *driver) createCanary(ctx context.Context, a *appState) error {
	if err := d.apply(ctx, a.ref.canary()); err != nil {
		return fmt.Errorf("apply canary %s: %w", a.ref, err)
	}
	err := d.obs.waitCanary(ctx, a.ref, 3*time.Minute, "Initialized", func(c *coalminev1beta1.Canary) bool {
		return c.Status.Phase == coalminev1beta1.PhaseInitialized || c.Status.Phase == coalminev1beta1.PhaseSucceeded
	})
	d.syncState(a)
	return err
}

// syncState takes the app's stable release and whether it holds a failed revision from
// the Canary as observed: the team ships on top of what the cluster says, not of what it
// hoped (a release replaced mid-analysis may have been promoted first).
func (d *driver) syncState(a *appState) {
	st, ok := d.obs.status(a.ref)
	if !ok {
		return
	}
	if s, ok := a.specs[st.StableRevision]; ok {
		a.stable = s
	}
	a.holdsBad = st.Phase == coalminev1beta1.PhaseFailed
}

func (d *driver) newSpec(a *appState, k kind) spec {
	a.n++
	s := spec{id: fmt.Sprintf("%s/r%d", a.ref.ns, a.n), latencyMs: goodLatencyMs, description: "good"}
	switch k {
	case kBadErrors:
		s.errorRate, s.description = badErrorRate, "bad: 50% errors"
	case kBadLatency:
		s.latencyMs, s.description = badLatencyMs, "bad: p99 1500ms"
	}
	return s
}

// run drives the app until enough.
func (d *driver) run(ctx context.Context, a *appState) {
	for ctx.Err() == nil && !d.enough() {
		// A team does not ship the second an outcome is in.
		if !sleepCtx(ctx, time.Duration(500+a.rng.IntN(4500))*time.Millisecond) {
			return
		}
		k := d.nextKind(a)
		a.scenarios++
		if err := d.scenario(ctx, a, k); err != nil && ctx.Err() == nil {
			d.logf("%s: scenario %s: %v", a.ref, k, err)
		}
	}
}

func (d *driver) nextKind(a *appState) kind {
	if a.scenarios < len(a.plan) {
		k := a.plan[a.scenarios]
		if !(a.holdsBad && k == kRevertMid) {
			return k
		}
	}
	if a.holdsBad && a.rng.IntN(100) < 45 {
		return kRevert
	}
	r := a.rng.IntN(100)
	switch {
	case r < 30:
		return kGood
	case r < 45:
		return kBadErrors
	case r < 55:
		return kBadLatency
	case r < 70:
		return kSupersede
	case r < 80:
		return kRevertMid
	case r < 90:
		return kBadRevert
	case r < 95:
		return kDelete
	default:
		return kDeleteInOutage
	}
}

// kRevert is a plain revert of a held bad revision (chosen after a bad release).
const kRevert kind = "revert"

func (d *driver) scenario(ctx context.Context, a *appState, k kind) error {
	switch k {
	case kGood:
		return d.shipAndWait(ctx, a, d.newSpec(a, kGood), expectSucceeded)
	case kBadErrors, kBadLatency:
		return d.shipAndWait(ctx, a, d.newSpec(a, k), expectFailed)
	case kBadRevert:
		if err := d.shipAndWait(ctx, a, d.newSpec(a, kBadErrors), expectFailed); err != nil {
			return err
		}
		return d.revert(ctx, a, nil)
	case kRevert:
		return d.revert(ctx, a, nil)
	case kSupersede:
		first, err := d.shipMidAnalysis(ctx, a)
		if err != nil || first == nil {
			return err
		}
		next := kGood
		if a.rng.IntN(3) == 0 {
			next = kBadErrors
		}
		exp := expectSucceeded
		if next != kGood {
			exp = expectFailed
		}
		return d.shipAndWaitAfter(ctx, a, d.newSpec(a, next), exp, first)
	case kRevertMid:
		first, err := d.shipMidAnalysis(ctx, a)
		if err != nil || first == nil {
			return err
		}
		return d.revert(ctx, a, first)
	case kDelete:
		return d.deleteRecreate(ctx, a)
	case kDeleteInOutage:
		return d.deleteInMeshOutage(ctx, a)
	}
	return fmt.Errorf("unknown scenario %s", k)
}

// waitCooldown holds a good release until the last bad canary's samples left the window.
func (d *driver) waitCooldown(ctx context.Context, a *appState) {
	if wait := time.Until(a.lastBadEnd.Add(cooldown)); wait > 0 {
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
	}
}

func (d *driver) shipAndWait(ctx context.Context, a *appState, s spec, exp expectation) error {
	return d.shipAndWaitAfter(ctx, a, s, exp, nil)
}

// shipAndWaitAfter ships s (superseding prev when set) and waits for its outcome.
func (d *driver) shipAndWaitAfter(ctx context.Context, a *appState, s spec, exp expectation, prev *release) error {
	if exp == expectSucceeded && prev == nil {
		d.waitCooldown(ctx, a)
	}
	r, err := d.ship(ctx, a, s, exp, prev)
	if err != nil {
		return err
	}
	return d.settle(ctx, a, r)
}

// ship applies release s and registers what the observer must see of it.
func (d *driver) ship(ctx context.Context, a *appState, s spec, exp expectation, prev *release) (*release, error) {
	shippedAt := time.Now()
	stored, err := d.applyDeployment(ctx, a, s)
	if err != nil {
		return nil, err
	}
	rv := parseRV(stored.ResourceVersion)
	if prev != nil {
		d.obs.supersede(prev, rv)
	}
	desc := s.description
	if exp == expectReverted {
		desc = "revert to " + s.id
	}
	r := &release{app: a.ref, id: s.id, desc: desc, spec: s, expect: exp, hash: coalminev1beta1.TemplateRevision(&stored.Spec.Template),
		shipRV: rv, shipped: shippedAt, after: prev, done: make(chan struct{})}
	d.shipped.Add(1)
	a.specs[r.hash] = s
	d.obs.expect(r)
	return r, nil
}

// settle waits for the observer's verdict on r (bounded; the observer flags a late one).
func (d *driver) settle(ctx context.Context, a *appState, r *release) error {
	select {
	case <-r.done:
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(i2Bound + 3*time.Minute):
		return fmt.Errorf("release %s: no outcome", r.id)
	}
	if r.outcome == coalminev1beta1.PhaseFailed {
		a.lastBadEnd = time.Now()
	}
	d.syncState(a)
	return nil
}

// revert applies the stable release's template again: nothing may roll. prev is the
// revision it abandons mid-analysis, if any.
func (d *driver) revert(ctx context.Context, a *appState, prev *release) error {
	if prev == nil && !a.holdsBad {
		return nil
	}
	s := a.stable
	r, err := d.ship(ctx, a, s, expectReverted, prev)
	if err != nil {
		return err
	}
	return d.settle(ctx, a, r)
}

// shipMidAnalysis ships a good release and returns once its canary carries traffic, so
// the next apply arrives mid-analysis. It returns nil if the release ended first.
func (d *driver) shipMidAnalysis(ctx context.Context, a *appState) (*release, error) {
	d.waitCooldown(ctx, a)
	r, err := d.ship(ctx, a, d.newSpec(a, kGood), expectSucceeded, nil)
	if err != nil {
		return nil, err
	}
	err = d.obs.waitCanary(ctx, a.ref, 2*time.Minute, "progressing at the first step", func(c *coalminev1beta1.Canary) bool {
		return c.Status.Phase == coalminev1beta1.PhaseProgressing && c.Status.CanaryRevision == r.hash && c.Status.CanaryWeight >= stepWeight
	})
	select {
	case <-r.done:
		// Over before it could be interrupted (a slow pass or a kill): a plain rollout.
		return nil, d.settle(ctx, a, r)
	default:
	}
	if err != nil {
		return nil, d.settle(ctx, a, r)
	}
	return r, nil
}

// deleteRecreate deletes the Canary (half of the time mid-analysis), waits until it is
// gone and the app is restored, and creates it again.
func (d *driver) deleteRecreate(ctx context.Context, a *appState) error {
	var mid *release
	if a.rng.IntN(2) == 0 && !a.holdsBad {
		var err error
		if mid, err = d.shipMidAnalysis(ctx, a); err != nil {
			return err
		}
	}
	return d.deleteAndRecreate(ctx, a, mid)
}

// deleteInMeshOutage deletes the Canary of a TrafficRoute app mid-analysis while the
// Global CP (where its route lives) is down: the outage loop starts its next outage of
// the Global CP when this app's canary carries traffic, and the deletion follows at once.
func (d *driver) deleteInMeshOutage(ctx context.Context, a *appState) error {
	if a.ref.routeKind != coalminev1beta1.RouteKindTrafficRoute || d.meshOutages == nil || a.holdsBad {
		return d.deleteRecreate(ctx, a)
	}
	req := &outageRequest{app: a.ref, go_: make(chan struct{}), ready: make(chan struct{}), begun: make(chan struct{})}
	select {
	case d.meshOutages <- req:
	default:
		return d.deleteRecreate(ctx, a)
	}
	select {
	case <-req.go_:
	case <-ctx.Done():
		req.abandoned.Store(true)
		return ctx.Err()
	case <-d.outagesOver:
		req.abandoned.Store(true)
		return d.deleteRecreate(ctx, a)
	case <-time.After(4 * time.Minute):
		req.abandoned.Store(true)
		return d.deleteRecreate(ctx, a)
	}
	mid, err := d.shipMidAnalysis(ctx, a)
	if err == nil && mid != nil {
		// The status is written before the route: wait for the route itself.
		_ = d.obs.waitRoute(ctx, a.ref, 10*time.Second, func(w int) bool { return w > 0 })
	}
	close(req.ready)
	if err != nil || mid == nil {
		return err
	}
	select {
	case <-req.begun:
		d.logf("%s: deleting its Canary at weight %d%% while the Global CP is down", a.ref, stepWeight)
	case <-time.After(30 * time.Second):
	}
	return d.deleteAndRecreate(ctx, a, mid)
}

// outageRequest is a driver asking the outage loop for an outage of the Global CP while
// its canary carries traffic.
type outageRequest struct {
	app       *appRef
	go_       chan struct{} // the outage loop is about to start one: ship now
	ready     chan struct{} // the canary carries traffic (or the attempt ended)
	begun     chan struct{} // the Global CP is down
	abandoned atomic.Bool
}

func (d *driver) deleteAndRecreate(ctx context.Context, a *appState, mid *release) error {
	c := &coalminev1beta1.Canary{ObjectMeta: metav1.ObjectMeta{Namespace: a.ref.ns, Name: a.ref.name}}
	d.obs.deleting(a.ref, mid)
	if err := d.w.zc.Delete(ctx, c); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete canary: %w", err)
	}
	if err := d.obs.waitGone(ctx, a.ref, stuckBound+time.Minute); err != nil {
		return err
	}
	// The app is plain now: the last applied template rolls. Wait for that, then guard
	// it again; its template is the stable one from here on.
	live := &appsv1.Deployment{}
	err := sandbox.Poll(ctx, 2*time.Minute, 200*time.Millisecond, func(ctx context.Context) (bool, error) {
		if err := d.w.zc.Get(ctx, client.ObjectKey{Namespace: a.ref.ns, Name: a.ref.name}, live); err != nil {
			return false, err
		}
		st := live.Status
		ok := !live.Spec.Paused && st.ObservedGeneration >= live.Generation && st.UpdatedReplicas == appReplicas &&
			st.ReadyReplicas == appReplicas && st.Replicas == appReplicas
		if !ok {
			return false, fmt.Errorf("deployment %s not rolled out after the Canary's deletion (paused %v, %d/%d updated)", a.ref, live.Spec.Paused, st.UpdatedReplicas, appReplicas)
		}
		return true, nil
	})
	if err != nil {
		return err
	}
	return d.createCanary(ctx, a)
}

// applyDeployment server-side applies the app at release s, retrying while the webhook
// cannot be reached (every attempt is an admission call, recorded).
func (d *driver) applyDeployment(ctx context.Context, a *appState, s spec) (*appsv1.Deployment, error) {
	obj := a.ref.deployment(s)
	var stored *appsv1.Deployment
	err := sandbox.Poll(ctx, 3*time.Minute, 300*time.Millisecond, func(ctx context.Context) (bool, error) {
		u, err := toUnstructured(obj)
		if err != nil {
			return false, err
		}
		start := time.Now()
		err = d.w.zc.Patch(ctx, u, client.Apply, client.FieldOwner(fieldManager), client.ForceOwnership)
		d.adm.record("apply", start, time.Now(), err)
		if err != nil {
			return false, err
		}
		stored = &appsv1.Deployment{}
		return true, runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, stored)
	})
	if err != nil {
		return nil, fmt.Errorf("apply %s at %s: %w", a.ref, s.id, err)
	}
	return stored, nil
}

func (d *driver) apply(ctx context.Context, obj client.Object) error {
	return sandbox.Poll(ctx, time.Minute, 300*time.Millisecond, func(ctx context.Context) (bool, error) {
		u, err := toUnstructured(obj)
		if err != nil {
			return false, err
		}
		return err == nil, d.w.zc.Patch(ctx, u, client.Apply, client.FieldOwner(fieldManager), client.ForceOwnership)
	})
}

func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	gvk, err := apiutil.GVKForObject(obj, scheme)
	if err != nil {
		return nil, err
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{Object: m}
	u.SetGroupVersionKind(gvk)
	delete(u.Object, "status")
	unstructured.RemoveNestedField(u.Object, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(u.Object, "spec", "template", "metadata", "creationTimestamp")
	return u, nil
}

// admissions counts the Deployment writes that went through coalmine's mutating webhook
// (failurePolicy Fail) and the ones that failed calling it, judged against which replicas
// were serving at the time.
type admissions struct {
	f *fleet

	mu              sync.Mutex
	calls           int
	failed          int // all webhook failures
	failedNoReplica int // no replica was ready the whole call: expected with one replica
	failedCut       int // in flight on a replica at the instant it was SIGKILLed
	failedServed    []admissionFailure
	byCaller        map[string]int
	onViolation     func(admissionFailure)
}

type admissionFailure struct {
	caller     string
	start, end time.Time
	err        string
}

func newAdmissions(f *fleet) *admissions { return &admissions{f: f, byCaller: map[string]int{}} }

// connectionLost: the webhook call failed on its TCP connection, not on an answer.
func connectionLost(err error) bool {
	msg := err.Error()
	for _, s := range []string{"broken pipe", "connection reset", "EOF", "use of closed network connection"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

func isWebhookFailure(err error) bool {
	return err != nil && strings.Contains(err.Error(), "failed calling webhook")
}

func (a *admissions) record(caller string, start, end time.Time, err error) {
	if err != nil && !isWebhookFailure(err) {
		// Conflicts, dry-run refusals, a Deployment that went away: not an admission call
		// that failed.
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) || errors.Is(err, context.Canceled) {
			return
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.calls++
	a.byCaller[caller]++
	if !isWebhookFailure(err) {
		return
	}
	a.failed++
	switch {
	case !a.f.servedThroughout(start, end):
		a.failedNoReplica++
	case connectionLost(err) && a.f.lb.cutsIn(start, end) > 0:
		// The call rode a connection to the replica killed at that moment: no replica
		// can answer on a connection that dies, and the apiserver does not retry.
		a.failedCut++
	default:
		f := admissionFailure{caller: caller, start: start, end: end, err: err.Error()}
		a.failedServed = append(a.failedServed, f)
		if a.onViolation != nil {
			a.onViolation(f)
		}
	}
}
