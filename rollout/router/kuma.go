package router

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// DeleteTimeout bounds one Delete (a read and a delete, milliseconds when the cluster
// answers), whatever deadline the caller's context has or lacks: an unreachable mesh
// control plane or an expired kubeconfig must not hold a Canary's deletion for ever.
const DeleteTimeout = 10 * time.Second

// routeKind is what differs between TrafficRoute and MeshHTTPRoute; kumaRouter does the
// rest, so ownership and clean-up follow one rule for both.
//
// +kubebuilder:object:generate=false
type routeKind interface {
	kind() string
	namespaced() bool
	// empty is an object of the kind to read into.
	empty() client.Object
	// desired is the route for t at canaryWeight percent.
	desired(t Target, canaryWeight int) client.Object
	// canaryWeight reads the canary's percentage from a route of the kind.
	canaryWeight(obj client.Object, t Target) int
}

type kumaRouter struct {
	c             client.Client
	k             routeKind
	deleteTimeout time.Duration
}

func newRouter(c client.Client, k routeKind) *kumaRouter {
	return &kumaRouter{c: c, k: k, deleteTimeout: DeleteTimeout}
}

func (r *kumaRouter) key(t Target) client.ObjectKey {
	key := client.ObjectKey{Name: RouteName(r.k.kind(), t)}
	if r.k.namespaced() {
		key.Namespace = t.Namespace
	}
	return key
}

func (r *kumaRouter) SetWeights(ctx context.Context, t Target, canaryWeight int) error {
	if err := t.validate(canaryWeight); err != nil {
		return err
	}
	return applyRoute(ctx, r.c, r.k.kind(), r.k.desired(t, canaryWeight))
}

func (r *kumaRouter) Acquire(ctx context.Context, t Target) error {
	obj, err := r.get(ctx, t)
	switch {
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case !Owned(obj.GetLabels(), t):
		return notOurs(r.k.kind(), display(r.key(t)), obj.GetLabels(), t)
	}
	return nil
}

func (r *kumaRouter) Observe(ctx context.Context, t Target) (Observed, error) {
	obj, err := r.get(ctx, t)
	if apierrors.IsNotFound(err) {
		return Observed{}, nil
	}
	if err != nil {
		return Observed{}, err
	}
	return Observed{Found: true, Ours: Owned(obj.GetLabels(), t), Weight: r.k.canaryWeight(obj, t)}, nil
}

// Delete reads the route, then deletes it only if it is t's, on condition that it is still
// the object that was read (UID): one that someone re-created in between is left alone.
func (r *kumaRouter) Delete(ctx context.Context, t Target) error {
	ctx, cancel := context.WithTimeout(ctx, r.deleteTimeout)
	defer cancel()
	logger := log.FromContext(ctx).WithValues("kind", r.k.kind(), "name", display(r.key(t)))
	obj, err := r.get(ctx, t)
	switch {
	case meta.IsNoMatchError(err):
		logger.Info("route kind not served by the cluster; nothing to delete")
		return nil
	case apierrors.IsNotFound(err):
		return nil
	case err != nil:
		return err
	case !Owned(obj.GetLabels(), t):
		logger.Info("leaving route alone: not coalmine's for this Canary", "labels", obj.GetLabels())
		return nil
	}
	uid := obj.GetUID()
	err = r.c.Delete(ctx, obj, client.Preconditions{UID: &uid})
	switch {
	case err == nil, apierrors.IsNotFound(err), meta.IsNoMatchError(err):
		return nil
	case apierrors.IsConflict(err):
		return fmt.Errorf("delete %s %s: replaced since it was read, left alone: %w", r.k.kind(), display(r.key(t)), err)
	}
	return fmt.Errorf("delete %s %s: %w", r.k.kind(), display(r.key(t)), err)
}

// get reads t's route. Its error wraps the API's, so apierrors.IsNotFound and
// meta.IsNoMatchError still tell a missing object or kind.
func (r *kumaRouter) get(ctx context.Context, t Target) (client.Object, error) {
	if err := t.complete(); err != nil {
		return nil, err
	}
	obj, key := r.k.empty(), r.key(t)
	if err := r.c.Get(ctx, key, obj); err != nil {
		return nil, fmt.Errorf("get %s %s: %w", r.k.kind(), display(key), err)
	}
	return obj, nil
}

func (r *kumaRouter) Object(t Target) *metav1.PartialObjectMetadata {
	key := r.key(t)
	return &metav1.PartialObjectMetadata{
		TypeMeta:   metaTypeOf(r.k.kind()),
		ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
	}
}

func (r *kumaRouter) Ref(t Target) RouteRef {
	key := r.key(t)
	return RouteRef{Kind: r.k.kind(), Name: key.Name, Namespace: key.Namespace, Mesh: t.mesh()}
}
