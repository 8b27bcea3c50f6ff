package router

import (
	"context"
	"errors"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// userMeshHTTPRoute is a MeshHTTPRoute someone wrote by hand for alice's apex: no coalmine
// labels, all traffic to primary.
func userMeshHTTPRoute(name string) *MeshHTTPRoute {
	mr := NewMeshHTTPRoute(alice, 0)
	mr.ObjectMeta = metav1.ObjectMeta{
		Name: name, Namespace: alice.Namespace, UID: types.UID("user-" + name),
		Labels: map[string]string{LabelMesh: "mesh-a", "team": "payments"},
	}
	return mr
}

func withLabels(l map[string]string, edit func(map[string]string)) map[string]string {
	out := merge(nil, l)
	edit(out)
	return out
}

func TestOwned(t *testing.T) {
	ours := alice.labels()
	noName := alice
	noName.CanaryName = ""
	tests := []struct {
		name   string
		labels map[string]string
		target Target
		want   bool
	}{
		{"coalmine's labels for this Canary", ours, alice, true},
		{"and labels others added", withLabels(ours, func(l map[string]string) { l["kuma.io/origin"] = "zone" }), alice, true},
		{"no labels", nil, alice, false},
		{"managed by someone else", withLabels(ours, func(l map[string]string) { l[LabelManagedBy] = "Helm" }), alice, false},
		{"not managed at all", withLabels(ours, func(l map[string]string) { delete(l, LabelManagedBy) }), alice, false},
		{"another Canary's", withLabels(ours, func(l map[string]string) { l[LabelCanaryName] = "bob" }), alice, false},
		{"a Canary of another namespace", withLabels(ours, func(l map[string]string) { l[LabelCanaryNamespace] = "apps-b" }), alice, false},
		{"no Canary name label", withLabels(ours, func(l map[string]string) { delete(l, LabelCanaryName) }), alice, false},
		{"empty labels for a Target without a Canary name", noName.labels(), noName, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Owned(tt.labels, tt.target); got != tt.want {
				t.Errorf("Owned(%v) = %v, want %v", tt.labels, got, tt.want)
			}
		})
	}
}

func TestAcquire(t *testing.T) {
	otherCanary := NewMeshHTTPRoute(alice, 5)
	otherCanary.Labels[LabelCanaryName] = "alice-duplicate"
	tests := []struct {
		name     string
		existing client.Object
		notOurs  []string // what the ErrNotOurs message must say; nil: no error
	}{
		{"no route yet", nil, nil},
		{"coalmine's route for this Canary", NewMeshHTTPRoute(alice, 5), nil},
		{"a user's route of coalmine's name", userMeshHTTPRoute("alice-coalmine"),
			[]string{"MeshHTTPRoute apps-a-mesh-a/alice-coalmine", "not managed by coalmine", "rename or delete it", "label it", "coalmine.dev/canary-name=alice"}},
		{"another Canary's route", otherCanary,
			[]string{"MeshHTTPRoute apps-a-mesh-a/alice-coalmine", "belongs to Canary apps-a-mesh-a/alice-duplicate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var objs []client.Object
			if tt.existing != nil {
				objs = append(objs, tt.existing)
			}
			c, w := newClient(t, objs...)
			err := NewMeshHTTPRouteRouter(c).Acquire(context.Background(), alice)
			if w.gets != 1 || w.total() != 0 {
				t.Errorf("requests %+v, want one read and no write", *w)
			}
			if tt.notOurs == nil {
				if err != nil {
					t.Fatalf("Acquire: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNotOurs) {
				t.Fatalf("Acquire = %v, want ErrNotOurs", err)
			}
			for _, s := range tt.notOurs {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("message %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestAcquireTrafficRouteNamesIt(t *testing.T) {
	foreign := NewTrafficRoute(alice, 0)
	foreign.Labels = map[string]string{LabelManagedBy: "flagger"}
	c, _ := newClient(t, foreign)
	err := NewTrafficRouteRouter(c).Acquire(context.Background(), alice)
	if !errors.Is(err, ErrNotOurs) || !strings.Contains(err.Error(), `TrafficRoute alice.apps-a-mesh-a exists and is managed by "flagger"`) {
		t.Errorf("Acquire = %v", err)
	}
}

func TestAcquireReportsReadErrors(t *testing.T) {
	c, _ := newHookedClient(t, hooks{get: func(context.Context, client.WithWatch, client.ObjectKey, client.Object) error {
		return apierrors.NewForbidden(GroupVersion.WithResource("meshhttproutes").GroupResource(), "alice-coalmine", nil)
	}})
	err := NewMeshHTTPRouteRouter(c).Acquire(context.Background(), alice)
	if !apierrors.IsForbidden(err) || errors.Is(err, ErrNotOurs) {
		t.Errorf("Acquire = %v, want the Forbidden error, not ErrNotOurs", err)
	}
}

func TestObserveTellsOursFromNotOurs(t *testing.T) {
	foreign := userMeshHTTPRoute("alice-coalmine")
	foreign.Spec.To[0].Rules[0].Default.BackendRefs[1].Weight = 30
	foreign.Spec.To[0].Rules[0].Default.BackendRefs[0].Weight = 70
	c, _ := newClient(t, foreign)
	if got, want := observe(t, NewMeshHTTPRouteRouter(c), alice), (Observed{Found: true, Ours: false, Weight: 30}); got != want {
		t.Errorf("Observe() = %+v, want %+v", got, want)
	}
}
