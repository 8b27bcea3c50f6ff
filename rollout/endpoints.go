package rollout

import (
	"context"
	"fmt"
	"maps"

	appsv1 "k8s.io/api/apps/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
)

// canaryEndpointsWaiting says why a canary Deployment that reports ready cannot carry
// traffic yet: its Service publishes fewer ready endpoints than the readiness threshold
// asks of the Deployment (the EndpointSlice controller lags behind pod readiness under
// load, and a terminating canary's pods linger in the slices). Envoy answers 503 for a
// cluster without endpoints, so weight given then fails requests that count against the
// revision. "" when it can: enough ready endpoints, or no slice of the Service in the
// cache at all (a cluster without the EndpointSlice controller, a Service labelled by an
// older coalmine until this pass relabels it), where the Deployment's readiness decides
// as before.
func (x *pass) canaryEndpointsWaiting(ctx context.Context, d *appsv1.Deployment) (string, error) {
	svc := x.canary.CanaryName()
	var slices discoveryv1.EndpointSliceList
	if err := x.r.Client.List(ctx, &slices, client.InNamespace(x.canary.Namespace), client.MatchingLabels{discoveryv1.LabelServiceName: svc}); err != nil {
		return "", fmt.Errorf("list endpointslices of service %s: %w", svc, err)
	}
	if len(slices.Items) == 0 {
		return "", nil
	}
	ready := map[string]bool{}
	for i := range slices.Items {
		maps.Copy(ready, readyAddresses(&slices.Items[i]))
	}
	want := int64(d.Status.UpdatedReplicas)*int64(x.canary.CanaryReadyThreshold()) + 99
	want /= 100
	want = max(want, 1)
	if int64(len(ready)) >= want {
		return "", nil
	}
	return fmt.Sprintf("Service %s has %d ready endpoints of the %d the canary needs (Deployment %s is ready; the endpoints follow)",
		svc, len(ready), want, d.Name), nil
}

// endpointSliceHandler wakes the Canary named on a canary Service's slice (the labels the
// slice copies from labelCanaryService) when the slice's ready endpoints change.
func endpointSliceHandler() handler.EventHandler {
	return mapEvents(canaryOfRoute, func(old, new client.Object) []client.Object {
		o, ok1 := old.(*discoveryv1.EndpointSlice)
		n, ok2 := new.(*discoveryv1.EndpointSlice)
		if ok1 && ok2 && maps.Equal(readyAddresses(o), readyAddresses(n)) {
			return nil
		}
		return []client.Object{new}
	})
}

// readyAddresses are the first addresses of the slice's ready endpoints ("unknown" is
// ready, as consumers of discovery/v1 treat it).
func readyAddresses(s *discoveryv1.EndpointSlice) map[string]bool {
	ready := map[string]bool{}
	for _, ep := range s.Endpoints {
		if (ep.Conditions.Ready == nil || *ep.Conditions.Ready) && len(ep.Addresses) > 0 {
			ready[ep.Addresses[0]] = true
		}
	}
	return ready
}
