package rollout

import (
	"context"
	"fmt"
	"maps"
	"strconv"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Per-field overrides of the annotation opt-in, on the Deployment.
const (
	// AnnotationPort is the Service port; default the first container port.
	AnnotationPort = v1beta1.AnnotationPrefix + "port"
	// AnnotationInterval is analysis.interval, a Go duration.
	AnnotationInterval = v1beta1.AnnotationPrefix + "interval"
	// AnnotationThreshold is analysis.threshold.
	AnnotationThreshold = v1beta1.AnnotationPrefix + "threshold"
	// AnnotationMaxWeight is analysis.maxWeight.
	AnnotationMaxWeight = v1beta1.AnnotationPrefix + "max-weight"
	// AnnotationStepWeight is analysis.stepWeight.
	AnnotationStepWeight = v1beta1.AnnotationPrefix + "step-weight"

	// OptInEnabled is the value of v1beta1.AnnotationCanary that opts a Deployment in.
	OptInEnabled = "enabled"
)

// The metrics of an opted-in Deployment are the seed's (flagger-kuma-poc-writeup.md): the
// two builtins with its thresholds, a success rate of at least 99% over 1m and a p99
// latency of at most 500ms over 30s. They need Kuma's HTTP stats, hence the protocol
// annotation on the Services. A team that wants other checks writes a Canary.
const (
	optInSuccessRate         = 99
	optInSuccessRateInterval = "1m"
	optInDuration            = 500
	optInDurationInterval    = "30s"
	// The seed's threshold and maxWeight (Flagger's defaults are 1 and 100; an opted-in
	// Deployment has no Canary to set them in, so it gets the seed's).
	optInThreshold = 5
	optInMaxWeight = 50
)

// OptInCanary is the Canary an annotated Deployment gets: named like it, targeting it,
// Services on the port of coalmine.dev/port or the first container port, the seed's analysis
// (interval 1m, threshold 5, maxWeight 50, stepWeight 10) unless overridden by
// coalmine.dev/interval, /threshold, /max-weight, /step-weight, and the seed's metrics.
// The Deployment's coalmine.dev/route-kind and coalmine.dev/delete-services annotations and
// its pod template's kuma.io/mesh carry over. Invalid overrides are ignored and returned as
// warnings; no port at all is an error. The caller sets the owner reference.
func OptInCanary(d *appsv1.Deployment) (*v1beta1.Canary, []string, error) {
	var warnings []string
	ann := d.Annotations
	intAnn := func(key string, lo, hi int) int {
		v, ok := ann[key]
		if !ok {
			return 0
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < lo || n > hi {
			warnings = append(warnings, fmt.Sprintf("%s=%q is not a number in [%d, %d]; using the default", key, v, lo, hi))
			return 0
		}
		return n
	}

	port := int32(intAnn(AnnotationPort, 1, 65535))
	if port == 0 {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if len(ctr.Ports) > 0 {
				port = ctr.Ports[0].ContainerPort
				break
			}
		}
	}
	if port == 0 {
		return nil, warnings, fmt.Errorf("no %s annotation and no container port to serve", AnnotationPort)
	}

	a := &v1beta1.CanaryAnalysis{
		Interval:   "1m",
		Threshold:  optInThreshold,
		MaxWeight:  optInMaxWeight,
		StepWeight: v1beta1.DefaultStepWeight,
		Metrics: []v1beta1.CanaryMetric{
			{Name: v1beta1.MetricRequestSuccessRate, Threshold: optInSuccessRate, Interval: optInSuccessRateInterval},
			{Name: v1beta1.MetricRequestDuration, Threshold: optInDuration, Interval: optInDurationInterval},
		},
	}
	if v, ok := ann[AnnotationInterval]; ok {
		if dur, err := time.ParseDuration(v); err != nil || dur <= 0 {
			warnings = append(warnings, fmt.Sprintf("%s=%q is not a positive duration; using the default", AnnotationInterval, v))
		} else {
			a.Interval = v
		}
	}
	if n := intAnn(AnnotationThreshold, 1, 1000); n > 0 {
		a.Threshold = n
	}
	if n := intAnn(AnnotationMaxWeight, 1, 100); n > 0 {
		a.MaxWeight = n
	}
	if n := intAnn(AnnotationStepWeight, 1, 100); n > 0 {
		a.StepWeight = n
	}
	if a.StepWeight > a.MaxWeight {
		warnings = append(warnings, fmt.Sprintf("step weight %d is above max weight %d; using step weight %d", a.StepWeight, a.MaxWeight, a.MaxWeight))
		a.StepWeight = a.MaxWeight
	}

	proto := func() *v1beta1.CustomMetadata {
		return &v1beta1.CustomMetadata{Annotations: map[string]string{
			strconv.Itoa(int(port)) + ".service.kuma.io/protocol": "http",
		}}
	}
	c := &v1beta1.Canary{
		ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, Annotations: optInAnnotations(d)},
		Spec: v1beta1.CanarySpec{
			Provider:  "kuma",
			TargetRef: v1beta1.LocalObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: d.Name},
			Service: v1beta1.CanaryService{
				Port: port, PortName: v1beta1.DefaultPortName,
				Apex: proto(), Primary: proto(), Canary: proto(),
			},
			Analysis: a,
		},
	}
	return c, warnings, nil
}

func optInAnnotations(d *appsv1.Deployment) map[string]string {
	out := map[string]string{}
	for _, k := range []string{v1beta1.AnnotationRouteKind, v1beta1.AnnotationDeleteServices} {
		if v, ok := d.Annotations[k]; ok {
			out[k] = v
		}
	}
	if v, ok := d.Spec.Template.Annotations[v1beta1.AnnotationMesh]; ok {
		out[v1beta1.AnnotationMesh] = v
	}
	return out
}

// OptInReconciler gives a Deployment annotated coalmine.dev/canary: enabled, in a namespace
// labelled kuma.io/sidecar-injection: enabled, a Canary of OptInCanary owned by the
// Deployment. It keeps that Canary's spec in line with the annotations and deletes it when
// the annotation goes (the Canary's finalizer then restores the Deployment). A Canary the
// user wrote for the same Deployment wins: the opt-in Canary steps aside (is deleted).
type OptInReconciler struct {
	Client   client.Client
	Recorder events.EventRecorder
}

// SetupWithManager registers the opt-in controller: annotated Deployments, their Canaries,
// and Namespaces (a namespace joining or leaving the mesh).
func (r *OptInReconciler) SetupWithManager(mgr ctrl.Manager) error {
	annotated := func(o client.Object) bool { _, ok := o.GetAnnotations()[v1beta1.AnnotationCanary]; return ok }
	deployments := predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return annotated(e.Object) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return false },
		GenericFunc: func(e event.GenericEvent) bool { return annotated(e.Object) },
		UpdateFunc: func(e event.UpdateEvent) bool {
			if !annotated(e.ObjectOld) && !annotated(e.ObjectNew) {
				return false
			}
			return e.ObjectOld.GetGeneration() != e.ObjectNew.GetGeneration() ||
				!maps.Equal(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations())
		},
	}
	return ctrl.NewControllerManagedBy(mgr).
		Named("canary-opt-in").
		// See Reconciler.SetupWithManager: app.Run may run twice in one process.
		WithOptions(controller.Options{SkipNameValidation: ptr.To(true)}).
		For(&appsv1.Deployment{}, builder.WithPredicates(deployments)).
		// Canaries come and go; their status writes (several per rollout) change nothing here.
		Watches(&v1beta1.Canary{}, handler.EnqueueRequestsFromMapFunc(targetOfCanary), builder.WithPredicates(canaryChanged)).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(r.annotatedInNamespace)).
		Complete(r)
}

// targetOfCanary maps any Canary to the Deployment it guards (and owns it, for opt-in
// Canaries): a user's Canary appearing makes the opt-in step aside.
func targetOfCanary(_ context.Context, obj client.Object) []reconcile.Request {
	c, ok := obj.(*v1beta1.Canary)
	if !ok {
		return nil
	}
	out := []reconcile.Request{request(c.Namespace, c.Spec.TargetRef.Name)}
	if ref := metav1.GetControllerOf(c); ref != nil && ref.Kind == "Deployment" && ref.Name != c.Spec.TargetRef.Name {
		out = append(out, request(c.Namespace, ref.Name))
	}
	return out
}

func (r *OptInReconciler) annotatedInNamespace(ctx context.Context, ns client.Object) []reconcile.Request {
	var list appsv1.DeploymentList
	if err := r.Client.List(ctx, &list, client.InNamespace(ns.GetName())); err != nil {
		log.FromContext(ctx).Error(err, "list deployments", "namespace", ns.GetName())
		return nil
	}
	var out []reconcile.Request
	for _, d := range list.Items {
		if _, ok := d.Annotations[v1beta1.AnnotationCanary]; ok {
			out = append(out, request(d.Namespace, d.Name))
		}
	}
	return out
}

// Reconcile creates, updates or deletes the opt-in Canary of one Deployment.
func (r *OptInReconciler) Reconcile(ctx context.Context, req reconcile.Request) (ctrl.Result, error) {
	d := &appsv1.Deployment{}
	if err := r.Client.Get(ctx, req.NamespacedName, d); err != nil {
		// Gone: the garbage collector deletes the Canary it owned.
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if ref := metav1.GetControllerOf(d); ref != nil && ref.Kind == "Canary" {
		return ctrl.Result{}, nil // a canary Deployment is never opted in
	}
	want := d.Annotations[v1beta1.AnnotationCanary] == OptInEnabled && d.DeletionTimestamp.IsZero()
	if want {
		inMesh, err := r.inMesh(ctx, d.Namespace)
		if err != nil {
			return ctrl.Result{}, err
		}
		want = inMesh
	}

	existing := &v1beta1.Canary{}
	err := r.Client.Get(ctx, req.NamespacedName, existing)
	switch {
	case apierrors.IsNotFound(err):
		existing = nil
	case err != nil:
		return ctrl.Result{}, fmt.Errorf("get canary: %w", err)
	}
	ours := existing != nil && metav1.IsControlledBy(existing, d)

	if want && existing != nil && !ours {
		return ctrl.Result{}, nil // the user's own Canary of that name wins
	}
	if want {
		// A Canary the user wrote for this Deployment, under another name, wins too.
		var others v1beta1.CanaryList
		if err := r.Client.List(ctx, &others, client.InNamespace(d.Namespace)); err != nil {
			return ctrl.Result{}, fmt.Errorf("list canaries: %w", err)
		}
		for _, o := range others.Items {
			if o.Spec.TargetRef.Name == d.Name && !metav1.IsControlledBy(&o, d) {
				want = false
				break
			}
		}
	}
	if !want {
		if ours && existing.DeletionTimestamp.IsZero() {
			if err := r.Client.Delete(ctx, existing); client.IgnoreNotFound(err) != nil {
				return ctrl.Result{}, fmt.Errorf("delete opt-in canary: %w", err)
			}
			r.eventf(d, corev1.EventTypeNormal, "OptOut", "Deleted opt-in Canary %s", existing.Name)
		}
		return ctrl.Result{}, nil
	}

	desired, warnings, err := OptInCanary(d)
	for _, w := range warnings {
		r.eventf(d, corev1.EventTypeWarning, "OptInAnnotation", "%s", w)
	}
	if err != nil {
		r.eventf(d, corev1.EventTypeWarning, "OptInFailed", "Cannot opt in: %v", err)
		return ctrl.Result{}, nil
	}
	if err := controllerutil.SetControllerReference(d, desired, r.Client.Scheme()); err != nil {
		return ctrl.Result{}, fmt.Errorf("own canary: %w", err)
	}
	if existing == nil {
		if err := r.Client.Create(ctx, desired); err != nil {
			return ctrl.Result{}, fmt.Errorf("create opt-in canary: %w", err)
		}
		r.eventf(d, corev1.EventTypeNormal, "OptIn", "Created Canary %s with default analysis on port %d", desired.Name, desired.Spec.Service.Port)
		return ctrl.Result{}, nil
	}
	changed := !equality.Semantic.DeepEqual(existing.Spec, desired.Spec)
	for k, v := range desired.Annotations {
		if existing.Annotations[k] != v {
			changed = true
		}
	}
	if !changed {
		return ctrl.Result{}, nil
	}
	existing.Spec = desired.Spec
	if existing.Annotations == nil {
		existing.Annotations = map[string]string{}
	}
	maps.Copy(existing.Annotations, desired.Annotations)
	if err := r.Client.Update(ctx, existing); err != nil {
		return ctrl.Result{}, fmt.Errorf("update opt-in canary: %w", err)
	}
	return ctrl.Result{}, nil
}

func (r *OptInReconciler) inMesh(ctx context.Context, namespace string) (bool, error) {
	ns := &corev1.Namespace{}
	if err := r.Client.Get(ctx, client.ObjectKey{Name: namespace}, ns); err != nil {
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return false, fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	return ns.Labels[v1beta1.LabelSidecarInjection] == "enabled", nil
}

func (r *OptInReconciler) eventf(d *appsv1.Deployment, typ, reason, format string, args ...any) {
	if r.Recorder != nil {
		r.Recorder.Eventf(d, nil, typ, reason, "OptIn", format, args...)
	}
}
