package router

import (
	"context"
	"fmt"
	"strconv"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
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
	// creating or updating it in one request that reads nothing (idempotent: the API server
	// stores nothing when it is already so).
	SetWeights(ctx context.Context, t Target, canaryWeight int) error
	// Weights reports the canary weight of the current route; found is false when none exists.
	Weights(ctx context.Context, t Target) (canaryWeight int, found bool, err error)
	// Delete removes the route; absent is fine.
	Delete(ctx context.Context, t Target) error
	// Object names t's route (kind, name, namespace) for a read of its metadata.
	Object(t Target) *metav1.PartialObjectMetadata
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

// FieldOwner is the server-side apply field manager of every route coalmine writes.
const FieldOwner = "coalmine"

// applyRoute writes desired with server-side apply: one request, no read first, created
// when missing. The route is coalmine's alone, so it takes over any field someone edited
// (ForceOwnership), while labels, annotations and owner references others added (Kuma's
// webhook adds kuma.io/origin and more) stay: apply only touches the fields it names. An
// apply that changes nothing stores nothing.
func applyRoute(ctx context.Context, c client.Client, desired client.Object) error {
	kind, key := kindOf(desired), client.ObjectKeyFromObject(desired)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return fmt.Errorf("convert %s %s: %w", kind, key, err)
	}
	obj := &unstructured.Unstructured{Object: u}
	unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
	log.FromContext(ctx).V(1).Info("applying route", "kind", kind, "name", key.Name, "namespace", key.Namespace)
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, key, err)
	}
	return nil
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

func objectMeta(name, namespace string, t Target, extraLabels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      merge(t.labels(), extraLabels),
		Annotations: routeAnnotations(),
	}
}
