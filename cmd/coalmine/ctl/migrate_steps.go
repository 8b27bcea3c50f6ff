package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// stopReasons are the Ready=False reasons with which coalmine touches nothing until a
// person acts: waiting longer for Initialized does not help.
var stopReasons = []string{"ServiceConflict", "RouteConflict", "DuplicateTarget", "TargetNotFound", "InvalidSpec"}

// orphanFlagger deletes the Flagger Canary, leaving what it owns: the garbage collector
// removes the owner references from the primary Deployment, the Services and the HPA
// before the Canary goes (propagationPolicy Orphan). Flagger forgets the Canary and acts
// on nothing of it any more; the TrafficRoute has no owner reference at all.
func (m *migration) orphanFlagger(ctx context.Context) error {
	if m.flagger == nil {
		m.printf("Flagger Canary %s is gone: skipped", m.key)
		return nil
	}
	if err := m.saveCanary(ctx); err != nil {
		return err
	}
	uid := m.flagger.GetUID()
	err := m.cl.Delete(ctx, m.flagger, client.PropagationPolicy(metav1.DeletePropagationOrphan), client.Preconditions{UID: &uid})
	if client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete Flagger Canary %s: %w", m.key, err)
	}
	if err := m.await(ctx, "Flagger Canary deleted", func(ctx context.Context) (string, error) {
		fc := &unstructured.Unstructured{}
		fc.SetGroupVersionKind(flaggerCanaryGVK)
		err := m.cl.Get(ctx, m.key, fc)
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		if err != nil {
			return "", err
		}
		return fmt.Sprintf("still there with finalizers %v (the garbage collector orphans its objects first)", fc.GetFinalizers()), nil
	}); err != nil {
		return err
	}
	m.printf("deleted Flagger Canary %s, orphaning its Deployment %s and Services: Flagger no longer acts on them", m.key, m.primaryName())
	return nil
}

// scaleTarget scales the Deployment Flagger scaled to 0 back to the primary's replicas
// and waits until all are ready. Its pods join no route yet: only Flagger's <apex>-canary
// Service, at weight 0, selects them.
func (m *migration) scaleTarget(ctx context.Context) error {
	if m.primary == nil {
		m.printf("Deployment %s is gone: nothing to match, skipped", m.primaryName())
		return nil
	}
	want := int32(1)
	if m.primary.Spec.Replicas != nil {
		want = *m.primary.Spec.Replicas
	}
	target := &appsv1.Deployment{}
	if err := m.cl.Get(ctx, m.objKey(m.target), target); err != nil {
		return fmt.Errorf("get Deployment %s: %w", m.target, err)
	}
	if target.Spec.Replicas == nil || *target.Spec.Replicas < want {
		patch, _ := json.Marshal(map[string]any{"spec": map[string]any{"replicas": want}})
		if err := m.cl.Patch(ctx, target, client.RawPatch(types.MergePatchType, patch)); err != nil {
			return fmt.Errorf("scale Deployment %s to %d: %w", m.target, want, err)
		}
		m.printf("scaled Deployment %s to %d replicas, as %s", m.target, want, m.primary.Name)
	}
	return m.await(ctx, "Deployment "+m.target+" ready", func(ctx context.Context) (string, error) {
		d := &appsv1.Deployment{}
		if err := m.cl.Get(ctx, m.objKey(m.target), d); err != nil {
			return "", err
		}
		return notReady(d), nil
	})
}

// createCanary creates the coalmine Canary and waits until it is Initialized: the
// Services are coalmine's (the apex and <apex>-primary select the target's pods, which
// are ready) and coalmine's route sends all traffic to <apex>-primary.
func (m *migration) createCanary(ctx context.Context) error {
	if !m.exists {
		if err := m.cl.Create(ctx, m.canary.DeepCopy()); err != nil {
			return fmt.Errorf("create coalmine Canary %s: %w", m.key, err)
		}
		m.printf("created Canary %s (%s) from Flagger's spec", m.key, v1beta1.GroupVersion)
	}
	var c *v1beta1.Canary
	err := m.await(ctx, "coalmine Canary Initialized", func(ctx context.Context) (string, error) {
		c = &v1beta1.Canary{}
		if err := m.cl.Get(ctx, m.key, c); err != nil {
			return "", err
		}
		if r := meta.FindStatusCondition(c.Status.Conditions, "Ready"); r != nil && r.Status == metav1.ConditionFalse && slices.Contains(stopReasons, r.Reason) {
			return "", fmt.Errorf("coalmine touches nothing: %s: %s", r.Reason, r.Message)
		}
		switch p := c.Status.Phase; {
		case p != v1beta1.PhaseInitialized && p != v1beta1.PhaseSucceeded:
			return fmt.Sprintf("phase %q", p), nil
		case c.Status.Ownership == nil || c.Status.Ownership.Route == nil:
			return "no route recorded yet", nil
		}
		return "", nil
	})
	if err != nil {
		return err
	}
	own := c.Status.Ownership
	m.printf("coalmine initialised Canary %s: %d Services, %s %s sends 100%% to %s", m.key, len(own.Services), own.Route.Kind, own.Route.Name, c.PrimaryName())
	return nil
}

// deleteFlaggerRoute deletes the TrafficRoute Flagger wrote for the apex. Flagger names
// it after the apex alone, so a route of that name that routes another namespace's apex
// is another app's, and is left alone; so is one carrying coalmine's labels.
func (m *migration) deleteFlaggerRoute(ctx context.Context) error {
	apex := m.canary.ApexName()
	tr := &unstructured.Unstructured{}
	tr.SetGroupVersionKind(trafficRouteGVK)
	err := m.routes.Get(ctx, client.ObjectKey{Name: apex}, tr)
	switch {
	case apierrors.IsNotFound(err) || meta.IsNoMatchError(err):
		m.printf("no TrafficRoute %s: skipped", apex)
		return nil
	case err != nil:
		return fmt.Errorf("get TrafficRoute %s: %w", apex, err)
	}
	tag := fmt.Sprintf("%s_%s_svc_%d", apex, m.key.Namespace, m.canary.Spec.Service.Port)
	if by := tr.GetLabels()["app.kubernetes.io/managed-by"]; by == "coalmine" {
		m.printf("TrafficRoute %s is coalmine's, not Flagger's: left alone", apex)
		return nil
	}
	if dests := routeDestinations(tr); !slices.Equal(dests, []string{tag}) {
		m.printf("TrafficRoute %s routes %v, not %s: another app's, left alone", apex, dests, tag)
		return nil
	}
	uid := tr.GetUID()
	if err := m.routes.Delete(ctx, tr, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete TrafficRoute %s: %w", apex, err)
	}
	if err := m.await(ctx, "TrafficRoute "+apex+" deleted", func(ctx context.Context) (string, error) {
		err := m.routes.Get(ctx, client.ObjectKey{Name: apex}, tr.DeepCopy())
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "still there", err
	}); err != nil {
		return err
	}
	m.printf("deleted Flagger's TrafficRoute %s (it routed %s)", apex, tag)
	return nil
}

// routeDestinations are the kuma.io/service tags a TrafficRoute's destinations match.
func routeDestinations(tr *unstructured.Unstructured) []string {
	var out []string
	dests, _, _ := unstructured.NestedSlice(tr.Object, "spec", "destinations")
	for _, d := range dests {
		if m, ok := d.(map[string]any); ok {
			if tag, _, _ := unstructured.NestedString(m, "match", "kuma.io/service"); tag != "" {
				out = append(out, tag)
			}
		}
	}
	return out
}

// deletePrimary deletes Flagger's copy of the target once nothing routes to its pods: no
// Service selects them and no EndpointSlice lists them, and the drain has passed for the
// mesh to take them out of the callers' Envoys. Flagger's copy of the HPA goes with it.
func (m *migration) deletePrimary(ctx context.Context) error {
	p := m.primary
	if p == nil {
		m.printf("Deployment %s is gone: skipped", m.primaryName())
		return nil
	}
	podLabels := labels.Set(p.Spec.Template.Labels)
	if err := m.await(ctx, "no Service or EndpointSlice routes to "+p.Name, func(ctx context.Context) (string, error) {
		return m.routedTo(ctx, p, podLabels)
	}); err != nil {
		return err
	}
	m.printf("no Service selects the pods of %s; draining %s", p.Name, m.drain)
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(m.drain):
	}
	hpa := &autoscalingv2.HorizontalPodAutoscaler{}
	err := m.cl.Get(ctx, m.objKey(p.Name), hpa)
	switch {
	case err == nil && hpa.Spec.ScaleTargetRef.Kind == "Deployment" && hpa.Spec.ScaleTargetRef.Name == p.Name:
		uid := hpa.UID
		if err := m.cl.Delete(ctx, hpa, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
			return fmt.Errorf("delete HorizontalPodAutoscaler %s: %w", hpa.Name, err)
		}
		m.printf("deleted Flagger's HorizontalPodAutoscaler %s", hpa.Name)
	case err != nil && !apierrors.IsNotFound(err):
		return fmt.Errorf("get HorizontalPodAutoscaler %s: %w", p.Name, err)
	}
	uid := p.UID
	if err := m.cl.Delete(ctx, p, client.Preconditions{UID: &uid}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("delete Deployment %s: %w", p.Name, err)
	}
	if err := m.await(ctx, "Deployment "+p.Name+" deleted", func(ctx context.Context) (string, error) {
		err := m.cl.Get(ctx, m.objKey(p.Name), &appsv1.Deployment{})
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		return "still there", err
	}); err != nil {
		return err
	}
	m.printf("deleted Flagger's Deployment %s", p.Name)
	if left := primaryCopies(&p.Spec.Template.Spec); len(left) > 0 {
		m.printf("left alone: %s, which Flagger's config tracking copied for %s; nothing uses them now", strings.Join(left, ", "), p.Name)
	}
	return nil
}

// routedTo says which Service or EndpointSlice of the namespace still sends traffic to
// the primary's pods, "" when none does.
func (m *migration) routedTo(ctx context.Context, p *appsv1.Deployment, podLabels labels.Set) (string, error) {
	var svcs corev1.ServiceList
	if err := m.cl.List(ctx, &svcs, client.InNamespace(p.Namespace)); err != nil {
		return "", fmt.Errorf("list Services: %w", err)
	}
	for _, s := range svcs.Items {
		if len(s.Spec.Selector) > 0 && labels.SelectorFromSet(s.Spec.Selector).Matches(podLabels) {
			return fmt.Sprintf("Service %s selects them", s.Name), nil
		}
	}
	sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
	if err != nil {
		return "", fmt.Errorf("selector of %s: %w", p.Name, err)
	}
	var pods corev1.PodList
	if err := m.cl.List(ctx, &pods, client.InNamespace(p.Namespace), client.MatchingLabelsSelector{Selector: sel}); err != nil {
		return "", fmt.Errorf("list pods of %s: %w", p.Name, err)
	}
	names := map[string]bool{}
	for _, pod := range pods.Items {
		names[pod.Name] = true
	}
	var eps discoveryv1.EndpointSliceList
	if err := m.cl.List(ctx, &eps, client.InNamespace(p.Namespace)); err != nil {
		return "", fmt.Errorf("list EndpointSlices: %w", err)
	}
	for _, es := range eps.Items {
		for _, ep := range es.Endpoints {
			if ep.TargetRef != nil && ep.TargetRef.Kind == "Pod" && names[ep.TargetRef.Name] {
				return fmt.Sprintf("EndpointSlice %s lists pod %s", es.Name, ep.TargetRef.Name), nil
			}
		}
	}
	return "", nil
}

// primaryCopies are the ConfigMaps and Secrets named <name>-primary that a pod spec
// mounts or reads: Flagger's copies of the target's, owned by nothing once it let go.
func primaryCopies(spec *corev1.PodSpec) []string {
	seen := map[string]bool{}
	add := func(kind, name string) {
		if strings.HasSuffix(name, v1beta1.PrimarySuffix) {
			seen[kind+" "+name] = true
		}
	}
	for _, v := range spec.Volumes {
		if v.ConfigMap != nil {
			add("ConfigMap", v.ConfigMap.Name)
		}
		if v.Secret != nil {
			add("Secret", v.Secret.SecretName)
		}
	}
	for _, c := range slices.Concat(spec.InitContainers, spec.Containers) {
		for _, e := range c.EnvFrom {
			if e.ConfigMapRef != nil {
				add("ConfigMap", e.ConfigMapRef.Name)
			}
			if e.SecretRef != nil {
				add("Secret", e.SecretRef.Name)
			}
		}
		for _, e := range c.Env {
			if f := e.ValueFrom; f != nil && f.ConfigMapKeyRef != nil {
				add("ConfigMap", f.ConfigMapKeyRef.Name)
			} else if f != nil && f.SecretKeyRef != nil {
				add("Secret", f.SecretKeyRef.Name)
			}
		}
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// await polls cond until it returns "" (done) or an error; cond's text says what is not
// there yet, and ends the error when ctx runs out.
func (m *migration) await(ctx context.Context, what string, cond func(context.Context) (string, error)) error {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	last := "not checked yet"
	for {
		msg, err := cond(ctx)
		switch {
		case err != nil && ctx.Err() == nil:
			return fmt.Errorf("%s: %w", what, err)
		case err == nil && msg == "":
			return nil
		case err == nil:
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: not yet (%s): %w", what, last, ctx.Err())
		case <-tick.C:
		}
	}
}
