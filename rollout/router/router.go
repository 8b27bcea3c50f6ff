package router

import (
	"context"
	"fmt"
	"strconv"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Target identifies the traffic split of one Canary.
type Target struct {
	Namespace             string // app namespace
	Apex, Primary, Canary string // Service names
	Port                  int32  // Service port (not targetPort): the kuma.io/service tag uses it
	Mesh                  string
	CanaryName            string // the Canary object name, for labels
}

// Router writes the route that splits a Target's traffic.
type Router interface {
	// SetWeights makes the route send canaryWeight% to the canary and the rest to primary,
	// creating or updating it (idempotent; no write if already so).
	SetWeights(ctx context.Context, t Target, canaryWeight int) error
	// Weights reports the canary weight of the current route; found is false when none exists.
	Weights(ctx context.Context, t Target) (canaryWeight int, found bool, err error)
	// Delete removes the route; absent is fine.
	Delete(ctx context.Context, t Target) error
}

// Labels and annotations coalmine puts on every route it writes.
const (
	LabelManagedBy       = "app.kubernetes.io/managed-by"
	ManagedByValue       = "coalmine"
	LabelCanaryName      = "coalmine.dev/canary-name"
	LabelCanaryNamespace = "coalmine.dev/canary-namespace"

	// LabelMesh is how Kuma 2.x policies (MeshHTTPRoute) name their mesh.
	LabelMesh = "kuma.io/mesh"

	// AnnotationFluxReconcile "disabled" makes Flux's kustomize-controller leave an object
	// alone even if a Kustomization happens to contain one of the same name (say, a route
	// left in Git from the Flagger days): coalmine moves the weights, Git must not.
	AnnotationFluxReconcile = "kustomize.toolkit.fluxcd.io/reconcile"
)

// DefaultMesh is Kuma's default mesh, used when a Target names none.
const DefaultMesh = "default"

// ServiceTag is the kuma.io/service tag Kuma gives the pods of a Kubernetes Service:
// "<svc>_<namespace>_svc_<port>", port being the Service port.
func ServiceTag(svc, namespace string, port int32) string {
	return svc + "_" + namespace + "_svc_" + strconv.Itoa(int(port))
}

func (t Target) mesh() string {
	if t.Mesh == "" {
		return DefaultMesh
	}
	return t.Mesh
}

func (t Target) validate(canaryWeight int) error {
	if t.Namespace == "" || t.Apex == "" || t.Primary == "" || t.Canary == "" || t.Port <= 0 {
		return fmt.Errorf("incomplete route target %+v", t)
	}
	if canaryWeight < 0 || canaryWeight > 100 {
		return fmt.Errorf("canary weight %d is not a percentage", canaryWeight)
	}
	return nil
}

func (t Target) labels() map[string]string {
	return map[string]string{
		LabelManagedBy:       ManagedByValue,
		LabelCanaryName:      t.CanaryName,
		LabelCanaryNamespace: t.Namespace,
	}
}

func routeAnnotations() map[string]string {
	return map[string]string{AnnotationFluxReconcile: "disabled"}
}

// route is what both kinds have in common for applyRoute.
type route interface {
	client.Object
	// specEqual reports whether the desired spec (and mesh) is already in place.
	specEqual(desired client.Object) bool
	// copySpec copies the desired spec (and mesh) into the receiver.
	copySpec(desired client.Object)
	// newEmpty is a zero object of the same kind.
	newEmpty() route
}

// applyRoute creates desired, or updates the existing object when its spec, mesh or
// coalmine's labels and annotations differ. It writes nothing when all are in place, so
// a reconcile at a steady weight costs one GET. Labels and annotations added by others
// (Kuma's webhook adds kuma.io/origin, owner references and more) are kept.
//
// Why not server-side apply: the zero-write check needs the current object anyway, and the
// route is coalmine's alone, so a conflict-checked update says the same with less machinery.
func applyRoute(ctx context.Context, c client.Client, desired route) error {
	key := client.ObjectKeyFromObject(desired)
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		// A fresh object each try: decoding into a used one would merge stale map entries.
		current := desired.newEmpty()
		err := c.Get(ctx, key, current)
		if apierrors.IsNotFound(err) {
			log.FromContext(ctx).V(1).Info("creating route", "kind", kindOf(desired), "name", key.Name, "namespace", key.Namespace)
			if err := c.Create(ctx, desired.DeepCopyObject().(client.Object)); err != nil {
				return fmt.Errorf("create %s %s: %w", kindOf(desired), key, err)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("get %s %s: %w", kindOf(desired), key, err)
		}
		if current.specEqual(desired) && containsAll(current.GetLabels(), desired.GetLabels()) &&
			containsAll(current.GetAnnotations(), desired.GetAnnotations()) {
			return nil
		}
		current.copySpec(desired)
		current.SetLabels(merge(current.GetLabels(), desired.GetLabels()))
		current.SetAnnotations(merge(current.GetAnnotations(), desired.GetAnnotations()))
		log.FromContext(ctx).V(1).Info("updating route", "kind", kindOf(desired), "name", key.Name, "namespace", key.Namespace)
		if err := c.Update(ctx, current); err != nil {
			return fmt.Errorf("update %s %s: %w", kindOf(desired), key, err)
		}
		return nil
	})
}

func deleteRoute(ctx context.Context, c client.Client, obj client.Object) error {
	err := c.Delete(ctx, obj)
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete %s %s: %w", kindOf(obj), client.ObjectKeyFromObject(obj), err)
	}
	return nil
}

// percent turns a canary weight out of total into a percentage. Coalmine's routes always
// total 100; one edited by hand may not, and the canary's share is what matters.
func percent(canary, total uint32) int {
	if total == 0 {
		return 0
	}
	return int((uint64(canary)*100 + uint64(total)/2) / uint64(total))
}

func containsAll(have, want map[string]string) bool {
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func merge(into, from map[string]string) map[string]string {
	if into == nil {
		into = make(map[string]string, len(from))
	}
	for k, v := range from {
		into[k] = v
	}
	return into
}

func kindOf(obj client.Object) string {
	switch obj.(type) {
	case *TrafficRoute:
		return "TrafficRoute"
	case *MeshHTTPRoute:
		return "MeshHTTPRoute"
	}
	return fmt.Sprintf("%T", obj)
}

var semantic = equality.Semantic

func objectMeta(name, namespace string, t Target, extraLabels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      merge(t.labels(), extraLabels),
		Annotations: routeAnnotations(),
	}
}
