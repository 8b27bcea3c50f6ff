package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
	"github.com/coalmine-dev/coalmine/sandbox"
	"github.com/coalmine-dev/coalmine/sandbox/meshsim"
)

// What a real zone CP adds to the multi-zone scenario (TestRolloutMultiZone): the route
// on the zone is KDS's copy of the Global CP's, and nobody but Kuma may write it there.

// expectZoneCopy checks that the zone's route followed the Global CP's, each version
// written by kuma-cp alone: the copy the simulator followed is the Global's route as KDS
// delivered it, not something coalmine wrote on the zone. KDS sends the state at each
// resync (about every second), so a weight the Global held for less (the initial 0, when
// a release ships at once) may never reach the zone; every step is held for an analysis
// interval and must.
func (s *scenario) expectZoneCopy(zone *routeRecorder) {
	s.t.Helper()
	global := s.route.weights()
	s.await(15*time.Second, "the zone's copy through the Global CP's steps "+fmt.Sprint(global), func(context.Context) (bool, error) {
		got := zone.weights()
		if !isSubsequence(got, global) || len(got) == 0 || got[len(got)-1] != global[len(global)-1] {
			return false, fmt.Errorf("zone copy %s went through weights %v, not the Global CP's route %v as resyncs see it", zone.name, got, global)
		}
		for _, step := range seedSteps() {
			if !slices.Contains(got, step) {
				return false, fmt.Errorf("zone copy %s went through weights %v, never step %d of the Global CP's %v", zone.name, got, step, global)
			}
		}
		return true, nil
	})
	if got := zone.writers(); !slices.Equal(got, []string{sandbox.KumaManager}) {
		s.t.Errorf("the zone's copy of %s was written by %v, want kuma-cp's KDS sync (%s) alone", zone.name, got, sandbox.KumaManager)
	}
}

// isSubsequence reports whether sub is seq with some elements left out, in order.
func isSubsequence(sub, seq []int) bool {
	i := 0
	for _, v := range seq {
		if i < len(sub) && sub[i] == v {
			i++
		}
	}
	return i == len(sub)
}

// testZoneRefusesTrafficRouteWrites: on a federated zone, Kuma's webhook refuses a new
// TrafficRoute and a change to the synced copy, from the admin and from coalmine's own
// ServiceAccount (which RBAC lets write TrafficRoutes on a zone without a Global CP):
// that is why coalmine writes routes through --mesh-kubeconfig.
func testZoneRefusesTrafficRouteWrites(t *testing.T, s *scenario, synced string) {
	ctx := testContext(t, time.Minute)
	user, groups := sandbox.ServiceAccountUser(demo.Namespace, demo.ServiceAccount)
	coalmine, err := client.New(sb.Impersonate(user, groups...), client.Options{Scheme: scheme})
	if err != nil {
		t.Fatalf("create coalmine's client: %v", err)
	}
	writers := []struct {
		name string
		c    client.Client
	}{{"the admin", k8s}, {"coalmine's ServiceAccount", coalmine}}

	for _, w := range writers {
		route := zoneWriteProbe(s.ns)
		err := w.c.Create(ctx, route)
		expectKumaZoneRefusal(t, "create of TrafficRoute "+route.GetName()+" on the zone by "+w.name, err)
	}

	copyOnZone := &unstructured.Unstructured{}
	copyOnZone.SetGroupVersionKind(trafficRouteGVK)
	if err := k8s.Get(ctx, client.ObjectKey{Name: synced}, copyOnZone); err != nil {
		t.Fatalf("get the zone's copy of %s: %v", synced, err)
	}
	for _, w := range writers {
		changed := copyOnZone.DeepCopy()
		if err := unstructured.SetNestedField(changed.Object, "zone-write", "metadata", "labels", "sandbox.coalmine.dev/probe"); err != nil {
			t.Fatalf("label the copy: %v", err)
		}
		expectKumaZoneRefusal(t, "update of the synced copy "+synced+" by "+w.name, w.c.Update(ctx, changed))
		expectKumaZoneRefusal(t, "delete of the synced copy "+synced+" by "+w.name, w.c.Delete(ctx, copyOnZone.DeepCopy()))
	}
	after := &unstructured.Unstructured{}
	after.SetGroupVersionKind(trafficRouteGVK)
	if err := k8s.Get(ctx, client.ObjectKey{Name: synced}, after); err != nil {
		t.Fatalf("get the zone's copy of %s after the refused writes: %v", synced, err)
	}
	if after.GetResourceVersion() != copyOnZone.GetResourceVersion() {
		t.Errorf("the zone's copy of %s changed (resourceVersion %s -> %s) though every write was refused",
			synced, copyOnZone.GetResourceVersion(), after.GetResourceVersion())
	}
}

// zoneWriteProbe is a TrafficRoute Kuma's validator accepts on a Global CP: refused on the
// zone for where it is written alone.
func zoneWriteProbe(ns string) *unstructured.Unstructured {
	apex := meshsim.Tag(appName, ns, 8080)
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": trafficRouteGVK.GroupVersion().String(),
		"kind":       trafficRouteGVK.Kind,
		"metadata":   map[string]any{"name": "zone-write." + ns},
		"mesh":       meshName,
		"spec": map[string]any{
			"sources":      []any{map[string]any{"match": map[string]any{"kuma.io/service": "*"}}},
			"destinations": []any{map[string]any{"match": map[string]any{"kuma.io/service": apex}}},
			"conf":         map[string]any{"destination": map[string]any{"kuma.io/service": apex}},
		},
	}}
}

func expectKumaZoneRefusal(t *testing.T, what string, err error) {
	t.Helper()
	switch {
	case err == nil:
		t.Errorf("%s: accepted, want Kuma's zone webhook to refuse it", what)
	case !strings.Contains(err.Error(), sandbox.KumaZoneRefusal):
		t.Errorf("%s: refused for another reason, want Kuma's %q: %v", what, sandbox.KumaZoneRefusal, err)
	default:
		t.Logf("%s: refused: %v", what, err)
	}
}
