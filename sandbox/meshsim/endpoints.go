package meshsim

import (
	"context"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/klog/v2"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"
)

// setEndpoints sets the endpoints of every port of svcs: the Ready pods, by name, that
// each Service's selector matches.
func (m *mesh) setEndpoints(ctx context.Context, svcs []corev1.Service, pods []corev1.Pod) {
	logger := log.FromContext(ctx)
	var ready []*corev1.Pod
	for i := range pods {
		if isReady(&pods[i]) {
			ready = append(ready, &pods[i])
		}
	}
	sort.Slice(ready, func(i, j int) bool { return ready[i].Name < ready[j].Name })
	for i := range svcs {
		svc := &svcs[i]
		if svc.Spec.Type == corev1.ServiceTypeExternalName {
			continue
		}
		var eps []endpoint
		if len(svc.Spec.Selector) > 0 {
			sel := labels.SelectorFromSet(svc.Spec.Selector)
			for _, p := range ready {
				if sel.Matches(labels.Set(p.Labels)) {
					eps = append(eps, behaviourOf(logger, p))
				}
			}
		}
		for _, p := range svc.Spec.Ports {
			m.endpoints[Tag(svc.Name, svc.Namespace, p.Port)] = eps
		}
	}
}

// confirmEmpty reads again, from live (uncached) when it can, the Pods of each Service
// that a call gives weight but whose cluster has no Ready pod. The Pods and the routes come
// from two informers, and the Pod one, the busier, can be behind: a route that gives a
// just-readied canary its first weight then reached a cluster the cache still showed
// empty, and the simulator answered 503s that no pod would have (found by make test in
// CI: TestOperatorCommands/scenarios/Retry, one 503 in the window of a retried canary
// failed every check of its first step). Envoy's emptiness must be the pods', not the
// simulator's cache's. Only the Service's own pods are listed (by its selector): a
// namespace of make bench holds hundreds. Without a live reader the cached view stands.
// It reports whether a weighted cluster is still empty after a live read: the route that
// weights it may be stale too (step reads it again).
func (s *Simulator) confirmEmpty(ctx context.Context, m *mesh, calls []call) bool {
	if s.opts.LiveClient == nil {
		return false
	}
	empty := emptyWeighted(m, calls)
	if len(empty) == 0 {
		return false
	}
	for _, svc := range m.services {
		if len(svc.Spec.Selector) == 0 || !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool {
			return empty[Tag(svc.Name, svc.Namespace, p.Port)]
		}) {
			continue
		}
		var pods corev1.PodList
		if err := s.opts.LiveClient.List(ctx, &pods, client.InNamespace(svc.Namespace), client.MatchingLabels(svc.Spec.Selector)); err != nil {
			log.FromContext(ctx).V(1).Info("Keeping the cached pods: listing them live failed", "service", klog.KObj(svc), "error", err.Error())
			continue
		}
		m.setEndpoints(ctx, []corev1.Service{*svc}, pods.Items)
	}
	return len(emptyWeighted(m, calls)) > 0
}

// emptyWeighted is the set of clusters that a call gives weight but that have no Ready pod.
func emptyWeighted(m *mesh, calls []call) map[string]bool {
	empty := map[string]bool{}
	for _, c := range calls {
		for _, b := range c.split {
			if b.weight > 0 && len(m.endpoints[b.tag]) == 0 {
				empty[b.tag] = true
			}
		}
	}
	return empty
}
