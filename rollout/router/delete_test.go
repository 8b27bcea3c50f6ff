package router

import (
	"context"
	"errors"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/apiutil"
)

// ourRoute is coalmine's MeshHTTPRoute for alice as the apiserver stores it, with a UID.
func ourRoute() *MeshHTTPRoute {
	mr := NewMeshHTTPRoute(alice, 5)
	mr.UID = "coalmine-route"
	return mr
}

func TestDeleteSendsTheUIDItRead(t *testing.T) {
	var got *types.UID
	c, _ := newHookedClient(t, hooks{delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		if p := (&client.DeleteOptions{}).ApplyOptions(opts).Preconditions; p != nil {
			got = p.UID
		}
		return deleteWithPreconditions(ctx, c, obj, opts...)
	}}, ourRoute())
	if err := NewMeshHTTPRouteRouter(c).Delete(context.Background(), alice); err != nil {
		t.Fatal(err)
	}
	if got == nil || *got != "coalmine-route" {
		t.Errorf("delete precondition UID %v, want coalmine-route", got)
	}
}

// A user who deletes coalmine's route and writes their own of the same name between
// Delete's read and its delete keeps theirs: the UID no longer matches.
func TestDeleteLeavesARouteReplacedAfterTheRead(t *testing.T) {
	replaced := false
	c, w := newHookedClient(t, hooks{get: func(ctx context.Context, c client.WithWatch, key client.ObjectKey, obj client.Object) error {
		err := c.Get(ctx, key, obj)
		if !replaced {
			replaced = true
			if err := c.Delete(ctx, ourRoute()); err != nil {
				return err
			}
			if err := c.Create(ctx, userMeshHTTPRoute("alice-coalmine")); err != nil {
				return err
			}
		}
		return err
	}}, ourRoute())
	err := NewMeshHTTPRouteRouter(c).Delete(context.Background(), alice)
	if !apierrors.IsConflict(err) {
		t.Errorf("Delete = %v, want the Conflict of the UID precondition", err)
	}
	if got := observe(t, NewMeshHTTPRouteRouter(c), alice); !got.Found || got.Ours {
		t.Errorf("after Delete: %+v, want the user's route in place", got)
	}
	if w.gets != 2 || w.deletes != 1 {
		t.Errorf("requests %+v: Delete must read once and delete once, no retry", *w)
	}
}

// The route CRD is gone (Kuma uninstalled, a 3.0 upgrade dropped TrafficRoute): there is
// nothing left to delete, and the Canary's deletion must not wait for it.
func TestSafety04DeleteWithMissingCRDIsGone(t *testing.T) {
	gk := schema.GroupKind{Group: GroupVersion.Group, Kind: KindMeshHTTPRoute}
	gr := GroupVersion.WithResource("meshhttproutes").GroupResource()
	tests := []struct {
		name            string
		getErr, delErr  error
		wantGet, wantDl int
	}{
		{"kind unknown to the RESTMapper", &meta.NoKindMatchError{GroupKind: gk, SearchedVersions: []string{"v1alpha1"}}, nil, 1, 0},
		{"discovery of kuma.io/v1alpha1 answers 404", &apiutil.ErrResourceDiscoveryFailed{GroupVersion: apierrors.NewNotFound(gr, "")}, nil, 1, 0},
		{"the apiserver answers 404 for the resource type", apierrors.NewGenericServerResponse(404, "get", gr, "", "", 0, true), nil, 1, 0},
		{"CRD removed between the read and the delete", nil, &meta.NoKindMatchError{GroupKind: gk, SearchedVersions: []string{"v1alpha1"}}, 1, 1},
		{"route removed between the read and the delete", nil, apierrors.NewNotFound(gr, "alice-coalmine"), 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hooks{}
			if tt.getErr != nil {
				h.get = func(context.Context, client.WithWatch, client.ObjectKey, client.Object) error { return tt.getErr }
			}
			if tt.delErr != nil {
				h.delete = func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error { return tt.delErr }
			}
			c, w := newHookedClient(t, h, ourRoute())
			if err := NewMeshHTTPRouteRouter(c).Delete(context.Background(), alice); err != nil {
				t.Errorf("Delete = %v, want nil: the route is gone", err)
			}
			if w.gets != tt.wantGet || w.deletes != tt.wantDl {
				t.Errorf("requests %+v, want %d read(s) and %d delete(s)", *w, tt.wantGet, tt.wantDl)
			}
		})
	}
}

// An unreachable mesh control plane: Delete gives up at its own bound even when the
// caller's context has none, and says why.
func TestSafety04DeleteIsBoundedWhenTheClusterHangs(t *testing.T) {
	c, w := newHookedClient(t, hooks{get: func(ctx context.Context, _ client.WithWatch, _ client.ObjectKey, _ client.Object) error {
		<-ctx.Done()
		return ctx.Err()
	}})
	r := NewMeshHTTPRouteRouter(c).(*kumaRouter)
	r.deleteTimeout = 50 * time.Millisecond
	done := make(chan error, 1)
	go func() { done <- r.Delete(context.Background(), alice) }()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Delete = %v, want the deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Delete still waiting 5 s after its 50 ms bound")
	}
	if w.gets != 1 {
		t.Errorf("requests %+v, want one read", *w)
	}
}

func TestDeleteTimeoutIsTheDefaultBound(t *testing.T) {
	if got := NewTrafficRouteRouter(nil).(*kumaRouter).deleteTimeout; got != DeleteTimeout || got <= 0 {
		t.Errorf("deleteTimeout = %v, want DeleteTimeout (%v)", got, DeleteTimeout)
	}
}

// An expired kubeconfig or a control plane that refuses: one attempt, the error back to
// the caller (who owns the retry and the Warning), nothing retried inside.
func TestSafety04DeleteFailsOnceWithoutRetrying(t *testing.T) {
	gr := GroupVersion.WithResource("meshhttproutes").GroupResource()
	tests := []struct {
		name            string
		getErr, delErr  error
		wantGet, wantDl int
		is              func(error) bool
	}{
		{"read refused: expired credentials", apierrors.NewUnauthorized("token expired"), nil, 1, 0, apierrors.IsUnauthorized},
		{"read fails: control plane unavailable", apierrors.NewServiceUnavailable("connection refused"), nil, 1, 0, apierrors.IsServiceUnavailable},
		{"delete refused: forbidden", nil, apierrors.NewForbidden(gr, "alice-coalmine", nil), 1, 1, apierrors.IsForbidden},
		{"delete fails: timeout", nil, apierrors.NewTimeoutError("etcd", 1), 1, 1, apierrors.IsTimeout},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hooks{}
			if tt.getErr != nil {
				h.get = func(context.Context, client.WithWatch, client.ObjectKey, client.Object) error { return tt.getErr }
			}
			if tt.delErr != nil {
				h.delete = func(context.Context, client.WithWatch, client.Object, ...client.DeleteOption) error { return tt.delErr }
			}
			c, w := newHookedClient(t, h, ourRoute())
			err := NewMeshHTTPRouteRouter(c).Delete(context.Background(), alice)
			if !tt.is(err) {
				t.Errorf("Delete = %v, want the API error wrapped", err)
			}
			if w.gets != tt.wantGet || w.deletes != tt.wantDl {
				t.Errorf("requests %+v, want %d read(s) and %d delete(s)", *w, tt.wantGet, tt.wantDl)
			}
		})
	}
}
