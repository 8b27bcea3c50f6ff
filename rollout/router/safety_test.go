package router

import (
	"context"
	"reflect"
	"testing"

	"sigs.k8s.io/controller-runtime/pkg/client"
)

// A user's MeshHTTPRoute named after the apex (the name one writes by hand) is neither
// overwritten while the canary progresses nor deleted with the Canary; one that holds
// coalmine's own name without its labels stops the Canary at Acquire and survives Delete.
func TestSafety09UserMeshHTTPRouteNeverTouched(t *testing.T) {
	ctx := context.Background()

	t.Run("user's route of the apex's name", func(t *testing.T) {
		user := userMeshHTTPRoute(alice.Apex)
		c, _ := newClient(t, user)
		before := storedMeshHTTPRoute(t, c, alice.Apex)
		r := NewMeshHTTPRouteRouter(c)
		if err := r.Acquire(ctx, alice); err != nil {
			t.Fatalf("Acquire: %v", err)
		}
		for _, w := range []int{0, 5, 50, 100, 0} {
			if err := r.SetWeights(ctx, alice, w); err != nil {
				t.Fatal(err)
			}
		}
		if got := observe(t, r, alice); !got.Ours || got.Weight != 0 {
			t.Errorf("coalmine's route: %+v, want ours at 0", got)
		}
		if ours := storedMeshHTTPRoute(t, c, "alice-coalmine"); !Owned(ours.Labels, alice) {
			t.Errorf("coalmine's route alice-coalmine lacks its labels: %v", ours.Labels)
		}
		if err := r.Delete(ctx, alice); err != nil {
			t.Fatal(err)
		}
		if after := storedMeshHTTPRoute(t, c, alice.Apex); !reflect.DeepEqual(after, before) {
			t.Errorf("user's route changed:\nbefore %+v\nafter  %+v", before, after)
		}
		if got := observe(t, r, alice); got.Found {
			t.Errorf("coalmine's own route left after Delete: %+v", got)
		}
	})

	t.Run("user's route of coalmine's name", func(t *testing.T) {
		user := userMeshHTTPRoute(MeshHTTPRouteName(alice.Apex))
		c, w := newClient(t, user)
		before := storedMeshHTTPRoute(t, c, user.Name)
		r := NewMeshHTTPRouteRouter(c)
		if err := r.Acquire(ctx, alice); err == nil {
			t.Fatal("Acquire of a user's route: no error")
		}
		if got := observe(t, r, alice); !got.Found || got.Ours {
			t.Errorf("Observe() = %+v, want found and not ours", got)
		}
		if err := r.Delete(ctx, alice); err != nil {
			t.Errorf("Delete of a user's route = %v, want nil (left alone)", err)
		}
		if w.total() != 0 {
			t.Errorf("writes %+v to a user's route", *w)
		}
		if after := storedMeshHTTPRoute(t, c, user.Name); !reflect.DeepEqual(after, before) {
			t.Errorf("user's route changed:\nbefore %+v\nafter  %+v", before, after)
		}
	})
}

func storedMeshHTTPRoute(t *testing.T, c client.Client, name string) *MeshHTTPRoute {
	t.Helper()
	mr := &MeshHTTPRoute{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: alice.Namespace, Name: name}, mr); err != nil {
		t.Fatalf("get MeshHTTPRoute %s: %v", name, err)
	}
	return mr
}

// After spec.service.name changes, the route of the old apex is found from the old Target
// (what Ref recorded) and deleted, and the new apex's route is not touched; in the other
// direction the new name never reuses the old route.
func TestSafety11RenameCleansUpOnlyTheOldRoute(t *testing.T) {
	renamed := alice
	renamed.Apex, renamed.Primary, renamed.Canary = "alice-web", "alice-web-primary", "alice-web-canary"
	for kind := range routers(nil) {
		t.Run(kind, func(t *testing.T) {
			ctx := context.Background()
			c, _ := newClient(t)
			r := routers(c)[kind]
			for _, target := range []Target{alice, renamed} {
				if err := r.SetWeights(ctx, target, 5); err != nil {
					t.Fatal(err)
				}
			}
			if old, cur := r.Ref(alice), r.Ref(renamed); old == cur {
				t.Fatalf("old and new apex share the route %+v", old)
			}
			if err := r.Delete(ctx, alice); err != nil {
				t.Fatal(err)
			}
			if got := observe(t, r, alice); got.Found {
				t.Errorf("old apex's route left: %+v", got)
			}
			if got := observe(t, r, renamed); !got.Ours || got.Weight != 5 {
				t.Errorf("new apex's route: %+v, want ours at 5", got)
			}
		})
	}
}
