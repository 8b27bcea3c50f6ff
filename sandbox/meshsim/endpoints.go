package meshsim

import (
	"context"
	"slices"
	"sort"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
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

// confirmEmpty reads again, from live (uncached) when it can, the Pods of each namespace
// where a call sends weight to a cluster with no Ready pod. The Pods and the routes come
// from two informers, and the Pod one, the busier, can be behind: a route that gives a
// just-readied canary its first weight then reached a cluster the cache still showed
// empty, and the simulator answered 503s that no pod would have (found by make test in
// CI: TestOperatorCommands/scenarios/Retry, one 503 in the window of a retried canary
// failed every check of its first step). Envoy's emptiness must be the pods', not the
// simulator's cache's. Without a live reader the cached view stands.
func (s *Simulator) confirmEmpty(ctx context.Context, m *mesh, calls []call) {
	if s.opts.LiveClient == nil {
		return
	}
	var namespaces []string
	for _, c := range calls {
		for _, b := range c.split {
			if b.weight > 0 && len(m.endpoints[b.tag]) == 0 && m.servicesIn[c.apex.namespace] != nil &&
				!slices.Contains(namespaces, c.apex.namespace) {
				namespaces = append(namespaces, c.apex.namespace)
			}
		}
	}
	for _, ns := range namespaces {
		var pods corev1.PodList
		if err := s.opts.LiveClient.List(ctx, &pods, client.InNamespace(ns)); err != nil {
			log.FromContext(ctx).V(1).Info("Keeping the cached pods: listing them live failed", "namespace", ns, "error", err.Error())
			continue
		}
		m.setEndpoints(ctx, m.servicesIn[ns], pods.Items)
	}
}
