package router

import (
	"context"
	"fmt"
	"strconv"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// Target identifies the traffic split of one Canary.
//
// +kubebuilder:object:generate=false
type Target struct {
	Namespace             string // app namespace
	Apex, Primary, Canary string // Service names
	Port                  int32  // Service port (not targetPort): the kuma.io/service tag uses it
	Mesh                  string
	CanaryName            string // the Canary object name, for labels
	// Match restricts the canary weight to the requests that match one of its entries
	// (A/B testing); the others go to primary. Nil: the weight applies to every request.
	Match []Match
}

// Router writes the route that splits a Target's traffic. Only a route carrying coalmine's
// labels for the Target's Canary (see Owned) is coalmine's: the others are never written
// over nor deleted.
//
// +kubebuilder:object:generate=false
type Router interface {
	// Acquire reads the route once and says whether coalmine may write it: nil when there
	// is none or it is this Canary's, an error wrapping ErrNotOurs when someone else's
	// object holds the name. Call it before the first SetWeights and record the outcome.
	Acquire(ctx context.Context, t Target) error
	// SetWeights makes the route send canaryWeight% to the canary and the rest to primary,
	// creating or updating it in one request that reads nothing (idempotent: the API server
	// stores nothing when it is already so). It does not check ownership: Acquire does.
	SetWeights(ctx context.Context, t Target, canaryWeight int) error
	// Observe reads the route: whether it exists, whether it is this Canary's, and its
	// canary weight.
	Observe(ctx context.Context, t Target) (Observed, error)
	// Delete removes the route if it is this Canary's, leaving anyone else's alone; absent,
	// or of a kind the cluster no longer serves, is gone. It makes one read and at most one
	// delete, within DeleteTimeout, and never retries.
	Delete(ctx context.Context, t Target) error
	// Object names t's route (kind, name, namespace) for a read of its metadata.
	Object(t Target) *metav1.PartialObjectMetadata
	// Ref names t's route for the Canary's status, so clean-up acts on what was written.
	Ref(t Target) RouteRef
}

// Observed is what a read of a Target's route found.
type Observed struct {
	Found  bool // the object exists
	Ours   bool // it carries coalmine's labels for this Canary (Owned)
	Weight int  // the canary's percentage of the traffic; meaningful only when Found
}

// RouteRef names one route coalmine wrote: what a Canary's status records and its
// clean-up deletes. Namespace is empty for the cluster-scoped TrafficRoute. A plain value
// (no pointers, maps or slices), so copying it is a deep copy.
type RouteRef struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
	Mesh      string `json:"mesh"`
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

// complete refuses a Target that cannot name its route or prove whose it is: the Canary's
// name is in the ownership labels, so without it no route could be told ours.
func (t Target) complete() error {
	if t.Namespace == "" || t.Apex == "" || t.Primary == "" || t.Canary == "" || t.Port <= 0 || t.CanaryName == "" {
		return fmt.Errorf("incomplete route target %+v", t)
	}
	return nil
}

func (t Target) validate(canaryWeight int) error {
	if err := t.complete(); err != nil {
		return err
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
// when missing. The route is coalmine's alone (Acquire made sure), so it takes over any
// field someone edited (ForceOwnership), while labels, annotations and owner references
// others added (Kuma's webhook adds kuma.io/origin and more) stay: apply only touches the
// fields it names. An apply that changes nothing stores nothing.
func applyRoute(ctx context.Context, c client.Client, kind string, desired client.Object) error {
	key := client.ObjectKeyFromObject(desired)
	u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(desired)
	if err != nil {
		return fmt.Errorf("convert %s %s: %w", kind, display(key), err)
	}
	obj := &unstructured.Unstructured{Object: u}
	unstructured.RemoveNestedField(obj.Object, "metadata", "creationTimestamp")
	log.FromContext(ctx).V(1).Info("applying route", "kind", kind, "name", key.Name, "namespace", key.Namespace)
	if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner(FieldOwner), client.ForceOwnership); err != nil {
		return fmt.Errorf("apply %s %s: %w", kind, display(key), err)
	}
	return nil
}

// display is "namespace/name", or the name alone for a cluster-scoped object.
func display(key client.ObjectKey) string {
	if key.Namespace == "" {
		return key.Name
	}
	return key.String()
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

func metaTypeOf(kind string) metav1.TypeMeta {
	return metav1.TypeMeta{APIVersion: GroupVersion.String(), Kind: kind}
}

func objectMeta(name, namespace string, t Target, extraLabels map[string]string) metav1.ObjectMeta {
	return metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      merge(t.labels(), extraLabels),
		Annotations: routeAnnotations(),
	}
}
