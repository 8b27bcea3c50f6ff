package chaos

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The observer's bounds (stated in the README):
const (
	// i2Bound: a release's outcome is seen within this long after its shipping or after
	// the end of the last disruption (kill until a leader is back, outage until restored),
	// whichever is later. A rollout takes 15-30 s undisturbed.
	i2Bound = 2 * time.Minute
	// i3Slack is the watch latency allowed on top of one interval before a weight on a
	// canary without ready pods counts.
	i3Slack = time.Second
	// i4Bound: after a Canary is gone, its route and canary Deployment are gone and its
	// Deployment unpaused and unmanaged within this long.
	i4Bound = 30 * time.Second
	// stuckBound (I5): no Canary stays in a non-terminal phase longer than this.
	stuckBound = 4 * time.Minute
	// i1Delay: a target pod is judged this long after it is seen, so the Canary watch has
	// delivered every status written before the pod was created (the judgment itself
	// compares resourceVersions: one etcd orders them).
	i1Delay = 4 * time.Second
)

type expectation int

const (
	expectSucceeded expectation = iota
	expectFailed
	expectReverted
)

func (e expectation) String() string {
	return [...]string{"good (Succeeded)", "bad (Failed)", "revert (Succeeded, nothing rolled)"}[e]
}

// release is one shipped template and what must become of it.
type release struct {
	app     *appRef
	id      string
	desc    string
	spec    spec
	expect  expectation
	hash    string // template revision
	shipRV  int64  // resourceVersion of the apply that shipped it
	shipped time.Time
	after   *release // the revision it replaced mid-analysis, if any
	done    chan struct{}

	// Set by the observer, under its lock.
	outcome      coalminev1beta1.CanaryPhase // Succeeded, Failed; "" superseded or abandoned
	verdict      string                      // ok, wrong, superseded, abandoned, late
	outcomeAt    time.Time
	supersededAt int64 // RV of the apply that replaced it mid-analysis
	late         bool
	closed       bool
	rollCheckAt  time.Time // revert: when to check that nothing rolled
}

type violation struct {
	inv    string
	app    string
	at     time.Duration
	detail string
}

type disruption struct {
	kind       string
	start, end time.Time // end zero while it lasts
}

type canaryVersion struct {
	rv     int64
	at     time.Time
	status coalminev1beta1.CanaryStatus
	del    bool // deletionTimestamp set
}

type podSeen struct {
	name, release string
	rv            int64
	at            time.Time
}

type rvRange struct{ from, to int64 }

// appObs is what the observer knows of one app, all from its own watches.
type appObs struct {
	ref     *appRef
	canary  *coalminev1beta1.Canary // latest, nil when absent
	uid     types.UID
	history []canaryVersion

	guardFrom int64 // RV since which the current Canary guards the app (0: not)
	guards    []rvRange
	initial   string
	// promotedRV: revision -> RV of the first status recording its promotion.
	promotedRV map[string]int64
	// hashOf: release id -> template revision (from the driver and the Deployment watch).
	hashOf    map[string]string
	unguarded map[string]bool // releases that ran while nothing guarded the app
	pending   []podSeen
	targetAdd []podSeen

	releases   []*release // open ones
	superseded []*release

	target      *appsv1.Deployment
	canaryD     bool
	canaryReady map[string]bool
	routeSeen   bool
	routeWeight int
	overMax     bool
	zeroSince   time.Time
	zeroFlagged bool

	ntSince   time.Time
	ntPhase   string
	ntFlagged bool

	deletedAt time.Time // the Canary is gone (DELETE seen)
	i4Due     time.Time // per-deletion check pending until then
	i4Done    bool
}

// observer watches the zone and the Global CP with the admin's credentials (informers of
// its own, nothing of coalmine's) and checks I1-I5 continuously.
type observer struct {
	start time.Time
	logf  func(string, ...any)

	mu          sync.Mutex
	apps        map[string]*appObs // by namespace
	routes      map[string]*appObs // TrafficRoute name, or ns/name of a MeshHTTPRoute
	violations  []violation
	disruptions []disruption
	durations   map[expectation][]time.Duration
	outcomes    map[string]int
	stop        context.CancelFunc
	done        chan struct{}
	// zoneDyn, globalDyn read a route afresh before an I3 verdict: after an outage of the
	// Global CP an informer relists with a backoff of up to 30 s, and its stale view
	// must not count.
	zoneDyn, globalDyn dynamic.Interface
	journal            func(string, ...any)
	confirm            []*appObs
}

var (
	canaryGVR        = schema.GroupVersionResource{Group: "coalmine.dev", Version: "v1beta1", Resource: "canaries"}
	trafficRouteGVR  = schema.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: "trafficroutes"}
	meshHTTPRouteGVR = schema.GroupVersionResource{Group: "kuma.io", Version: "v1alpha1", Resource: "meshhttproutes"}
)

func newObserver(refs []*appRef, logf func(string, ...any)) *observer {
	o := &observer{start: time.Now(), logf: logf, apps: map[string]*appObs{}, routes: map[string]*appObs{},
		durations: map[expectation][]time.Duration{}, outcomes: map[string]int{}, done: make(chan struct{}),
		journal: func(string, ...any) {}}
	for _, r := range refs {
		a := &appObs{ref: r, promotedRV: map[string]int64{}, hashOf: map[string]string{}, unguarded: map[string]bool{}, canaryReady: map[string]bool{}}
		o.apps[r.ns] = a
		if r.routeKind == coalminev1beta1.RouteKindMeshHTTPRoute {
			o.routes[r.ns+"/"+r.routeName()] = a
		} else {
			o.routes[r.routeName()] = a
		}
	}
	return o
}

// run starts the informers and the periodic checks; it returns once the caches synced.
func (o *observer) run(ctx context.Context, zone, global *rest.Config) error {
	ctx, o.stop = context.WithCancel(ctx)
	zoneDyn, err := dynamic.NewForConfig(zone)
	if err != nil {
		return err
	}
	globalDyn, err := dynamic.NewForConfig(global)
	if err != nil {
		return err
	}
	o.zoneDyn, o.globalDyn = zoneDyn, globalDyn
	kube, err := kubernetes.NewForConfig(zone)
	if err != nil {
		return err
	}
	zf := dynamicinformer.NewDynamicSharedInformerFactory(zoneDyn, 0)
	kf := informers.NewSharedInformerFactory(kube, 0)

	handlers := []struct {
		inf cache.SharedIndexInformer
		on  func(obj any, deleted bool)
	}{
		{zf.ForResource(canaryGVR).Informer(), o.onCanary},
		{zf.ForResource(meshHTTPRouteGVR).Informer(), func(obj any, del bool) { o.onRoute(obj, del, true) }},
		{kf.Core().V1().Pods().Informer(), o.onPod},
		{kf.Apps().V1().Deployments().Informer(), o.onDeployment},
	}
	for _, h := range handlers {
		on := h.on
		if _, err := h.inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc:    func(obj any) { on(obj, false) },
			UpdateFunc: func(_, obj any) { on(obj, false) },
			DeleteFunc: func(obj any) {
				if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
					obj = t.Obj
				}
				on(obj, true)
			},
		}); err != nil {
			return err
		}
	}
	zf.Start(ctx.Done())
	kf.Start(ctx.Done())
	for _, h := range handlers {
		if !cache.WaitForCacheSync(ctx.Done(), h.inf.HasSynced) {
			return errors.New("observer: caches did not sync")
		}
	}
	// The Global CP's TrafficRoutes are listed every 250 ms rather than watched: after
	// that apiserver was killed and restarted, an informer of ours stayed behind for up to
	// two and a half minutes (relist backoff), which would blind I3 and I4. While the
	// apiserver is down the last list stands: nobody can change a route then.
	go o.pollGlobalRoutes(ctx)
	go func() {
		defer close(o.done)
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				o.tick(time.Now())
				o.confirmI3(ctx)
			}
		}
	}()
	return nil
}

func (o *observer) pollGlobalRoutes(ctx context.Context) {
	known := map[string]bool{}
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		list, err := o.globalDyn.Resource(trafficRouteGVR).List(lctx, metav1.ListOptions{})
		cancel()
		if err != nil {
			continue
		}
		seen := map[string]bool{}
		for i := range list.Items {
			seen[list.Items[i].GetName()] = true
			if list.Items[i].GetKind() == "" {
				list.Items[i].SetKind("TrafficRoute")
			}
			o.onRoute(&list.Items[i], false, false)
		}
		for name := range known {
			if !seen[name] {
				u := &unstructured.Unstructured{}
				u.SetName(name)
				u.SetResourceVersion(list.GetResourceVersion())
				o.onRoute(u, true, false)
			}
		}
		known = seen
	}
}

func (o *observer) close() {
	if o.stop != nil {
		o.stop()
		<-o.done
	}
}

func parseRV(s string) int64 {
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

func (o *observer) violate(inv string, a *appObs, format string, args ...any) {
	app := "-"
	if a != nil {
		app = a.ref.String()
	}
	v := violation{inv: inv, app: app, at: time.Since(o.start), detail: fmt.Sprintf(format, args...)}
	o.violations = append(o.violations, v)
	o.journal("VIOLATION %s %s: %s", v.inv, v.app, v.detail)
	o.logf("VIOLATION %s %s at %s: %s", v.inv, v.app, v.at.Round(100*time.Millisecond), v.detail)
}

// --- events ---

func (o *observer) onCanary(obj any, deleted bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	c := &coalminev1beta1.Canary{}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, c); err != nil {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[c.Namespace]
	if a == nil || c.Name != a.ref.name {
		return
	}
	now := time.Now()
	rv := parseRV(c.ResourceVersion)
	if c.UID != a.uid {
		a.uid, a.guardFrom = c.UID, 0
		a.deletedAt, a.i4Done = time.Time{}, false
	}
	if deleted {
		if a.guardFrom > 0 {
			a.guards = append(a.guards, rvRange{a.guardFrom, rv})
			a.guardFrom = 0
		}
		a.canary = nil
		o.journal("%s canary rv %d: gone", a.ref, rv)
		a.deletedAt, a.i4Due, a.i4Done = now, now.Add(i4Bound), false
		a.ntSince, a.ntFlagged = time.Time{}, false
		return
	}
	st := c.Status
	dying := c.DeletionTimestamp != nil
	if p := a.canary; p == nil || p.Status.Phase != st.Phase || p.Status.CanaryWeight != st.CanaryWeight ||
		p.Status.CanaryRevision != st.CanaryRevision || p.Status.FailedChecks != st.FailedChecks || (p.DeletionTimestamp == nil) != !dying {
		o.journal("%s canary rv %d: %s weight %d failedChecks %d canary %s stable %s failed %s deleting %v: %s", a.ref, rv, st.Phase,
			st.CanaryWeight, st.FailedChecks, st.CanaryRevision, st.StableRevision, st.FailedRevision, dying, st.Message)
	}
	a.canary = c
	a.history = append(a.history, canaryVersion{rv: rv, at: now, status: *st.DeepCopy(), del: dying})
	if len(a.history) > 256 {
		a.history = a.history[len(a.history)-256:]
	}
	switch {
	case dying && a.guardFrom > 0:
		a.guards = append(a.guards, rvRange{a.guardFrom, rv})
		a.guardFrom = 0
	case !dying && a.guardFrom == 0 && st.Phase != "" && st.Phase != coalminev1beta1.PhaseInitializing && st.Phase != coalminev1beta1.PhaseTerminating:
		a.guardFrom = rv
	}
	promoted := func(rev string) {
		if rev == "" {
			return
		}
		if old, ok := a.promotedRV[rev]; !ok || rv < old {
			a.promotedRV[rev] = rv
		}
	}
	switch st.Phase {
	case coalminev1beta1.PhasePromoting, coalminev1beta1.PhaseFinalising:
		promoted(st.CanaryRevision)
	case coalminev1beta1.PhaseSucceeded:
		promoted(st.LastPromotedRevision)
	}
	for _, r := range a.superseded {
		if p, ok := a.promotedRV[r.hash]; ok && p > r.supersededAt && r.verdict != "promoted-after-supersede" {
			r.verdict = "promoted-after-supersede"
			o.violate("I2", a, "release %s (%s) was replaced mid-analysis at rv %d but promoted at rv %d", r.id, r.hash, r.supersededAt, p)
		}
	}
	for _, r := range slices.Clone(a.releases) {
		o.judge(a, r, a.history[len(a.history)-1])
	}
	// I5: time in a non-terminal phase.
	phase := string(st.Phase)
	if dying {
		phase = "Terminating"
	}
	if terminal(phase) {
		a.ntSince, a.ntPhase, a.ntFlagged = time.Time{}, "", false
	} else if a.ntSince.IsZero() || a.ntPhase != phase {
		a.ntSince, a.ntPhase, a.ntFlagged = now, phase, false
	}
}

func terminal(phase string) bool {
	switch coalminev1beta1.CanaryPhase(phase) {
	case coalminev1beta1.PhaseInitialized, coalminev1beta1.PhaseSucceeded, coalminev1beta1.PhaseFailed:
		return true
	}
	return false
}

// judge decides r's outcome from one Canary version, if that version settles it.
func (o *observer) judge(a *appObs, r *release, v canaryVersion) {
	if r.closed || r.verdict != "" || v.rv <= r.shipRV {
		return
	}
	st := v.status
	exp := r.expect
	if exp == expectReverted && r.after != nil {
		if p, ok := a.promotedRV[r.after.hash]; ok && p < r.shipRV {
			// The revision it meant to abandon was promoted before the revert arrived:
			// the "revert" is a new release of the old template.
			exp = expectSucceeded
		}
	}
	var verdict string
	switch {
	case st.Phase == coalminev1beta1.PhaseSucceeded && st.LastPromotedRevision == r.hash && exp != expectReverted:
		verdict = map[bool]string{true: "ok", false: "wrong"}[exp == expectSucceeded]
	case st.Phase == coalminev1beta1.PhaseSucceeded && st.StableRevision == r.hash && exp == expectReverted:
		verdict = "ok"
		r.rollCheckAt = v.at.Add(3 * time.Second)
	case st.Phase == coalminev1beta1.PhaseFailed && (st.FailedRevision == r.hash || st.CanaryRevision == r.hash):
		verdict = map[bool]string{true: "ok", false: "wrong"}[exp == expectFailed]
	default:
		return
	}
	r.outcome, r.outcomeAt, r.verdict = st.Phase, v.at, verdict
	if r.rollCheckAt.IsZero() {
		o.closeRelease(a, r)
	}
	o.outcomes[fmt.Sprintf("%s -> %s", exp, st.Phase)]++
	if verdict == "wrong" {
		o.violate("I2", a, "release %s (%s, %s) ended %s, want %s: %s", r.id, r.hash, r.desc, st.Phase, exp, st.Message)
		return
	}
	o.durations[exp] = append(o.durations[exp], v.at.Sub(r.shipped))
}

func (o *observer) closeRelease(a *appObs, r *release) {
	if r.closed {
		return
	}
	r.closed = true
	close(r.done)
	a.releases = slices.DeleteFunc(a.releases, func(x *release) bool { return x == r })
}

func (o *observer) onRoute(obj any, deleted, zone bool) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return
	}
	key := u.GetName()
	if zone {
		key = u.GetNamespace() + "/" + u.GetName()
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.routes[key]
	if a == nil {
		return
	}
	if deleted {
		o.journal("%s route %s rv %s: deleted", a.ref, key, u.GetResourceVersion())
		a.routeSeen, a.routeWeight, a.overMax = false, 0, false
		return
	}
	w, err := canaryWeightOf(u, a.ref.canaryTag())
	if !a.routeSeen || w != a.routeWeight {
		o.journal("%s route %s rv %s: canary weight %d", a.ref, key, u.GetResourceVersion(), w)
	}
	if err != nil {
		o.violate("I3", a, "route %s unreadable: %v", key, err)
		return
	}
	a.routeSeen, a.routeWeight = true, w
	if w > maxWeight && !a.overMax {
		a.overMax = true
		o.violate("I3", a, "route %s gives the canary %d%%, above maxWeight %d", key, w, maxWeight)
	} else if w <= maxWeight {
		a.overMax = false
	}
}

func (o *observer) onPod(obj any, deleted bool) {
	p, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[p.Namespace]
	if a == nil {
		return
	}
	switch p.Labels["app"] {
	case a.ref.name + coalminev1beta1.CanarySuffix:
		before := a.readyCanaryPods()
		if deleted {
			delete(a.canaryReady, p.Name)
		} else {
			a.canaryReady[p.Name] = p.DeletionTimestamp == nil && podReady(p)
		}
		if after := a.readyCanaryPods(); after != before {
			o.journal("%s canary pods ready: %d", a.ref, after)
		}
	case a.ref.name:
		if deleted || p.DeletionTimestamp != nil {
			return
		}
		for _, s := range a.targetAdd {
			if s.name == p.Name {
				return // seen
			}
		}
		s := podSeen{name: p.Name, release: releaseOf(p.Spec.Containers), rv: parseRV(p.ResourceVersion), at: time.Now()}
		a.targetAdd = append(a.targetAdd, s)
		a.pending = append(a.pending, s)
		o.journal("%s target pod %s rv %d: release %s", a.ref, s.name, s.rv, s.release)
	}
}

func (a *appObs) readyCanaryPods() int {
	n := 0
	for _, ok := range a.canaryReady {
		if ok {
			n++
		}
	}
	return n
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func releaseOf(cs []corev1.Container) string {
	for _, c := range cs {
		for _, e := range c.Env {
			if e.Name == releaseEnv {
				return e.Value
			}
		}
	}
	return ""
}

func (o *observer) onDeployment(obj any, deleted bool) {
	d, ok := obj.(*appsv1.Deployment)
	if !ok {
		return
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[d.Namespace]
	if a == nil {
		return
	}
	switch d.Name {
	case a.ref.name:
		if deleted {
			a.target = nil
			return
		}
		a.target = d
		if id := releaseOf(d.Spec.Template.Spec.Containers); id != "" {
			a.hashOf[id] = coalminev1beta1.TemplateRevision(&d.Spec.Template)
		}
	case a.ref.name + coalminev1beta1.CanarySuffix:
		if a.canaryD != !deleted {
			o.journal("%s canary Deployment exists: %v (rv %s)", a.ref, !deleted, d.ResourceVersion)
		}
		a.canaryD = !deleted
	}
}

// --- periodic checks ---

func (o *observer) tick(now time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range o.apps {
		o.checkI1(a, now)
		o.checkI2(a, now)
		o.checkI3(a, now)
		o.checkI4(a, now)
		o.checkI5(a, now)
	}
}

func (a *appObs) guardedAt(rv int64) bool {
	if a.guardFrom > 0 && rv > a.guardFrom {
		return true
	}
	for _, g := range a.guards {
		if rv > g.from && rv < g.to {
			return true
		}
	}
	return false
}

// I1: a pod of a guarded Deployment runs only a promoted template (or the one that ran
// before anything guarded it).
func (o *observer) checkI1(a *appObs, now time.Time) {
	keep := a.pending[:0]
	for _, p := range a.pending {
		if now.Sub(p.at) < i1Delay {
			keep = append(keep, p)
			continue
		}
		switch {
		case p.release == a.initial || a.unguarded[p.release]:
		case !a.guardedAt(p.rv):
			a.unguarded[p.release] = true
		default:
			h := a.hashOf[p.release]
			if at, ok := a.promotedRV[h]; ok && at < p.rv {
				break
			}
			o.violate("I1", a, "pod %s (rv %d) runs release %s (revision %s), not promoted before it was created", p.name, p.rv, p.release, h)
		}
	}
	a.pending = keep
}

// I2: every release gets its outcome within i2Bound after its last disruption.
func (o *observer) checkI2(a *appObs, now time.Time) {
	for _, r := range slices.Clone(a.releases) {
		if !r.rollCheckAt.IsZero() {
			// A revert's outcome is in; the driver waits for this check before it ships
			// anything else, so any target pod newer than the revert rolled for it.
			if now.After(r.rollCheckAt) {
				for _, p := range a.targetAdd {
					if p.rv > r.shipRV {
						o.violate("I2", a, "revert %s: pod %s (release %s) created after the revert: something rolled", r.id, p.name, p.release)
						break
					}
				}
				r.rollCheckAt = time.Time{}
				o.closeRelease(a, r)
			}
			continue
		}
		if !r.closed {
			from := r.shipped
			if e := o.lastDisruptionEnd(now); e.After(from) {
				from = e
			}
			if !r.late && now.Sub(from) > i2Bound {
				r.late = true
				phase := "none"
				if a.canary != nil {
					phase = fmt.Sprintf("%s (weight %d, failedChecks %d, %s)", a.canary.Status.Phase, a.canary.Status.CanaryWeight, a.canary.Status.FailedChecks, a.canary.Status.Message)
				}
				o.violate("I2", a, "release %s (%s, %s) has no outcome %s after its last disruption; Canary: %s", r.id, r.hash, r.desc, i2Bound, phase)
			}
		}
	}
}

// I3: the weight never exceeds maxWeight (checked on every route version) and a canary
// without ready pods carries no weight for more than one interval.
func (o *observer) checkI3(a *appObs, now time.Time) {
	ready := a.readyCanaryPods()
	if !(a.routeSeen && a.routeWeight > 0 && ready == 0) {
		a.zeroSince, a.zeroFlagged = time.Time{}, false
		return
	}
	if a.zeroSince.IsZero() {
		a.zeroSince = now
	}
	if !a.zeroFlagged && now.Sub(a.zeroSince) > interval+i3Slack && !slices.Contains(o.confirm, a) {
		o.confirm = append(o.confirm, a)
	}
}

// confirmI3 reads the routes of the I3 candidates afresh: a violation when the route
// still gives the canary weight; the informer was behind when it does not. A route that
// cannot be read (its apiserver is down) is as the informer last saw it: nobody can
// change it.
func (o *observer) confirmI3(ctx context.Context) {
	o.mu.Lock()
	cands := o.confirm
	o.confirm = nil
	o.mu.Unlock()
	for _, a := range cands {
		var ri dynamic.ResourceInterface = o.globalDyn.Resource(trafficRouteGVR)
		if a.ref.routeKind == coalminev1beta1.RouteKindMeshHTTPRoute {
			ri = o.zoneDyn.Resource(meshHTTPRouteGVR).Namespace(a.ref.ns)
		}
		rctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		u, err := ri.Get(rctx, a.ref.routeName(), metav1.GetOptions{})
		cancel()
		o.mu.Lock()
		fresh, w := err == nil, 0
		switch {
		case apierrors.IsNotFound(err):
			a.routeSeen, a.routeWeight, fresh = false, 0, true
		case err == nil:
			if w, err = canaryWeightOf(u, a.ref.canaryTag()); err == nil {
				a.routeSeen, a.routeWeight = true, w
			}
		}
		ready := a.readyCanaryPods()
		if !a.zeroFlagged && !a.zeroSince.IsZero() && a.routeSeen && a.routeWeight > 0 && ready == 0 {
			a.zeroFlagged = true
			how := "read afresh"
			if !fresh {
				how = fmt.Sprintf("its apiserver is unreachable (%v): as last seen", err)
			}
			o.violate("I3", a, "route %s gives %d%% to a canary with no ready pod for more than one interval (since %.1fs; canary Deployment exists: %v; route %s)",
				a.ref.routeName(), a.routeWeight, a.zeroSince.Sub(o.start).Seconds(), a.canaryD, how)
		} else if fresh {
			o.journal("%s: I3 candidate cleared by a fresh read of route %s (weight %d, exists %v): the informer was behind", a.ref, a.ref.routeName(), a.routeWeight, a.routeSeen)
			a.zeroSince = time.Time{}
		}
		o.mu.Unlock()
	}
}

// I4: after a Canary is gone, nothing of it is left.
func (o *observer) checkI4(a *appObs, now time.Time) {
	if a.deletedAt.IsZero() || a.i4Done || a.canary != nil {
		return
	}
	left := a.leftovers()
	if len(left) == 0 {
		a.i4Done = true
		return
	}
	if now.After(a.i4Due) {
		a.i4Done = true
		o.violate("I4", a, "%s after the Canary was gone: %s", i4Bound, strings.Join(left, "; "))
	}
}

func (a *appObs) leftovers() []string {
	var left []string
	if a.routeSeen {
		left = append(left, fmt.Sprintf("route %s (weight %d)", a.ref.routeName(), a.routeWeight))
	}
	if a.canaryD {
		left = append(left, "Deployment "+a.ref.name+coalminev1beta1.CanarySuffix)
	}
	if t := a.target; t != nil {
		if t.Spec.Paused {
			left = append(left, "Deployment "+a.ref.name+" paused")
		}
		if t.Labels[coalminev1beta1.LabelManaged] != "" {
			left = append(left, "Deployment "+a.ref.name+" still labelled "+coalminev1beta1.LabelManaged)
		}
		for _, f := range t.Finalizers {
			left = append(left, "finalizer "+f+" on Deployment "+a.ref.name)
		}
	}
	return left
}

// I5: nothing stays in a non-terminal phase past stuckBound.
func (o *observer) checkI5(a *appObs, now time.Time) {
	if a.ntSince.IsZero() || a.ntFlagged || now.Sub(a.ntSince) <= stuckBound {
		return
	}
	a.ntFlagged = true
	msg := ""
	if a.canary != nil {
		msg = a.canary.Status.Message
	}
	o.violate("I5", a, "Canary in %s for more than %s: %s", a.ntPhase, stuckBound, msg)
}

// --- what the driver and the scheduler tell it ---

func (o *observer) expectInitial(ref *appRef, id string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.apps[ref.ns].initial = id
}

func (o *observer) expect(r *release) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[r.app.ns]
	a.hashOf[r.id] = r.hash
	a.releases = append(a.releases, r)
	// The outcome may be recorded already (a revert takes one pass).
	for _, v := range a.history {
		o.judge(a, r, v)
	}
}

func (o *observer) supersede(r *release, rv int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[r.app.ns]
	if r.closed {
		return
	}
	r.supersededAt, r.verdict = rv, "superseded"
	a.superseded = append(a.superseded, r)
	o.outcomes["replaced mid-analysis"]++
	o.closeRelease(a, r)
	if p, ok := a.promotedRV[r.hash]; ok && p > rv {
		o.violate("I2", a, "release %s was replaced mid-analysis at rv %d but promoted at rv %d", r.id, rv, p)
	}
}

// deleting: the Canary is about to be deleted; mid (if any) is abandoned with it.
func (o *observer) deleting(ref *appRef, mid *release) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.apps[ref.ns]
	for _, r := range slices.Clone(a.releases) {
		if !r.closed && r.verdict == "" {
			r.verdict = "abandoned"
			o.outcomes["abandoned by a Canary deletion"]++
			o.closeRelease(a, r)
		}
	}
}

// disrupt records the start of a disruption; the returned func records its end.
func (o *observer) disrupt(kind string) func() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.disruptions = append(o.disruptions, disruption{kind: kind, start: time.Now()})
	i := len(o.disruptions) - 1
	return func() {
		o.mu.Lock()
		defer o.mu.Unlock()
		o.disruptions[i].end = time.Now()
	}
}

func (o *observer) lastDisruptionEnd(now time.Time) time.Time {
	var last time.Time
	for _, d := range o.disruptions {
		e := d.end
		if e.IsZero() {
			e = now
		}
		if e.After(last) {
			last = e
		}
	}
	return last
}

// status is the app's Canary status as last observed.
func (o *observer) status(ref *appRef) (coalminev1beta1.CanaryStatus, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	c := o.apps[ref.ns].canary
	if c == nil {
		return coalminev1beta1.CanaryStatus{}, false
	}
	return *c.Status.DeepCopy(), true
}

// waitCanary polls the observed Canary until cond holds.
func (o *observer) waitCanary(ctx context.Context, ref *appRef, timeout time.Duration, what string, cond func(*coalminev1beta1.Canary) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		o.mu.Lock()
		c := o.apps[ref.ns].canary
		ok := c != nil && cond(c)
		desc := "absent"
		if c != nil {
			desc = fmt.Sprintf("%s weight %d: %s", c.Status.Phase, c.Status.CanaryWeight, c.Status.Message)
		}
		o.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("canary %s not %s after %s: %s", ref, what, timeout, desc)
		case <-t.C:
		}
	}
}

// waitRoute polls the observed route until cond holds on its canary weight.
func (o *observer) waitRoute(ctx context.Context, ref *appRef, timeout time.Duration, cond func(w int) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		o.mu.Lock()
		a := o.apps[ref.ns]
		ok := a.routeSeen && cond(a.routeWeight)
		o.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("route of %s: not as wanted after %s", ref, timeout)
		case <-t.C:
		}
	}
}

// waitGone waits until the deleted Canary is gone.
func (o *observer) waitGone(ctx context.Context, ref *appRef, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		o.mu.Lock()
		a := o.apps[ref.ns]
		gone := a.canary == nil && !a.deletedAt.IsZero()
		o.mu.Unlock()
		if gone {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("canary %s not gone after %s", ref, timeout)
		case <-t.C:
		}
	}
}

// settled reports whether every release has its verdict and every check is done.
func (o *observer) settled() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, a := range o.apps {
		if len(a.releases) > 0 || len(a.pending) > 0 || (!a.deletedAt.IsZero() && !a.i4Done && a.canary == nil) {
			return false
		}
	}
	return true
}

// finish flags what never got a verdict.
func (o *observer) finish() {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := time.Now()
	for _, a := range o.apps {
		o.checkI1(a, now.Add(i1Delay))
		for _, r := range a.releases {
			if !r.closed && !r.late {
				o.violate("I2", a, "release %s (%s) has no outcome at the end of the run", r.id, r.desc)
			}
		}
		if !a.deletedAt.IsZero() && !a.i4Done && a.canary == nil {
			if left := a.leftovers(); len(left) > 0 {
				o.violate("I4", a, "at the end: %s", strings.Join(left, "; "))
			}
		}
	}
}

// finalLeftovers are the Canaries still present (finalizer stuck) after all were deleted.
func (o *observer) present() []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []string
	for _, a := range o.apps {
		if a.canary != nil {
			out = append(out, fmt.Sprintf("%s (%s, finalizers %v)", a.ref, a.canary.Status.Phase, a.canary.Finalizers))
		}
	}
	sort.Strings(out)
	return out
}

// canaryWeightOf reads the percentage of a TrafficRoute's or MeshHTTPRoute's traffic that
// goes to the canary tag.
func canaryWeightOf(u *unstructured.Unstructured, canaryTag string) (int, error) {
	var entries []any
	var nameKey []string
	switch u.GetKind() {
	case "TrafficRoute":
		entries, _, _ = unstructured.NestedSlice(u.Object, "spec", "conf", "split")
		nameKey = []string{"destination", "kuma.io/service"}
	case "MeshHTTPRoute":
		to, _, _ := unstructured.NestedSlice(u.Object, "spec", "to")
		for _, t := range to {
			rules, _, _ := unstructured.NestedSlice(t.(map[string]any), "rules")
			for _, rule := range rules {
				refs, _, _ := unstructured.NestedSlice(rule.(map[string]any), "default", "backendRefs")
				entries = append(entries, refs...)
			}
		}
		nameKey = []string{"name"}
	default:
		return 0, fmt.Errorf("unexpected kind %q", u.GetKind())
	}
	var canary, total int64
	for _, e := range entries {
		m, ok := e.(map[string]any)
		if !ok {
			return 0, fmt.Errorf("split entry %v is not an object", e)
		}
		w, ok, err := unstructured.NestedInt64(m, "weight")
		if err != nil || !ok {
			return 0, fmt.Errorf("split entry %v has no integer weight", e)
		}
		total += w
		if tag, _, _ := unstructured.NestedString(m, nameKey...); tag == canaryTag {
			canary += w
		}
	}
	if total == 0 {
		return 0, errors.New("route has no weight")
	}
	return int(canary * 100 / total), nil
}
