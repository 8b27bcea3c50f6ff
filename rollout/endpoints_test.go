package rollout

import (
	"context"
	"strings"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/rollout/router"
)

// canarySlice is the EndpointSlice the cluster publishes for the canary Service, with
// one endpoint of each given readiness.
func canarySlice(ready ...bool) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "alice-canary-x7k2p", Labels: map[string]string{
			discoveryv1.LabelServiceName: "alice-canary", router.LabelCanaryName: "alice", router.LabelCanaryNamespace: ns,
		}},
		AddressType: discoveryv1.AddressTypeIPv4,
	}
	for i, r := range ready {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{"10.0.0." + string(rune('1'+i))},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(r), Terminating: ptr.To(!r)},
		})
	}
	return s
}

// A canary whose Deployment reports ready but whose Service publishes no ready endpoint
// yet (the EndpointSlice controller lags behind under load) gets no weight: traffic sent
// to it would fail (Envoy answers 503 for a cluster without endpoints) and count against
// the revision. Found by make test in CI (TestOperatorCommands/scenarios/Retry).
func TestCanaryWeightWaitsForReadyEndpoints(t *testing.T) {
	e := newEnv(t, seedCanary(), targetDeployment(), canarySlice())
	e.settle()
	e.ship("alice:2")
	for range 3 {
		e.settle()
	}
	c := e.canary()
	if w, _ := e.router.weight("alice"); w != 0 || c.Status.CanaryWeight != 0 {
		t.Fatalf("weight %d (status %d) with no ready endpoint, want 0", w, c.Status.CanaryWeight)
	}
	if !strings.Contains(c.Status.Message, "alice-canary") || !strings.Contains(c.Status.Message, "endpoints") {
		t.Errorf("message %q, want it to say the canary Service has no ready endpoints", c.Status.Message)
	}

	// The old canary's pod terminating, the new one not yet ready: still none.
	e.setSlice(canarySlice(false))
	e.settle()
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Fatalf("weight %d with only a terminating endpoint", w)
	}
	// Two of the three replicas published: the readiness threshold (100%) asks for three.
	e.setSlice(canarySlice(false, true, true))
	e.settle()
	if w, _ := e.router.weight("alice"); w != 0 {
		t.Fatalf("weight %d with 2 of 3 endpoints ready", w)
	}
	e.setSlice(canarySlice(false, true, true, true))
	e.runUntil("weight 5", weightIs(5))

	// Mid-analysis, the endpoints go: weight back to 0 in the same pass (scenario 7).
	e.setSlice(canarySlice(false, false, false, false))
	e.reconcileOnce()
	if w, _ := e.router.weight("alice"); w != 0 || !strings.Contains(e.canary().Status.Message, "endpoints") {
		t.Errorf("weight %d message %q after the endpoints went, want 0 and the endpoints named", w, e.canary().Status.Message)
	}
}

func (e *env) setSlice(s *discoveryv1.EndpointSlice) {
	e.t.Helper()
	old := &discoveryv1.EndpointSlice{}
	if err := e.base.Get(context.Background(), client.ObjectKeyFromObject(s), old); err != nil {
		e.t.Fatal(err)
	}
	s.ResourceVersion = old.ResourceVersion
	if err := e.base.Update(context.Background(), s); err != nil {
		e.t.Fatal(err)
	}
}
