package rollout

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/rollout/workload"
)

// namespaceScope is what the Canary's namespace says about it.
type namespaceScope struct {
	labels, annotations map[string]string
}

// load reads the target, the namespace, the router and the mesh. A missing target is
// not an error: it is a situation (TargetMissing) once the Canary owns it.
func (x *pass) load(ctx context.Context) error {
	c := x.canary
	ns := &corev1.Namespace{}
	if err := x.r.Client.Get(ctx, client.ObjectKey{Name: c.Namespace}, ns); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("get namespace %s: %w", c.Namespace, err)
	}
	x.ns = namespaceScope{labels: ns.Labels, annotations: ns.Annotations}
	if ns.Labels[v1beta1.LabelSidecarInjection] != "enabled" {
		// The webhook's namespaceSelector does not match: template changes are not
		// intercepted, only caught by this loop after the fact (pods may already roll).
		x.degrade("NamespaceNotInScope", "namespace %s lacks the label %s=enabled: coalmine's webhook does not intercept its Deployments, so a template change may roll before the loop pauses it; label the namespace",
			c.Namespace, v1beta1.LabelSidecarInjection)
	}

	name := c.Spec.TargetRef.Name
	if own := x.status.Ownership; own != nil && own.Target.Name != "" {
		// The Canary acts on the Deployment it acquired: a targetRef edited past the
		// (fail-open) webhook does not move the guard.
		name = own.Target.Name
	}
	target := &appsv1.Deployment{}
	switch err := x.r.Client.Get(ctx, client.ObjectKey{Namespace: c.Namespace, Name: name}, target); {
	case apierrors.IsNotFound(err):
		target = nil
	case err != nil:
		return fmt.Errorf("get target deployment: %w", err)
	case x.r.memo.behind(memoTarget, client.ObjectKeyFromObject(target), target.ResourceVersion):
		return fmt.Errorf("deployment %s: %w", name, errCacheLag)
	}
	x.target = target

	kind := x.r.routeKind(c)
	x.kind = kind
	x.router = x.r.Routers[kind]
	if x.router == nil {
		x.stop("UnknownRouteKind", "no router for route kind %q (annotation %s): use %s or %s",
			kind, v1beta1.AnnotationRouteKind, v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute)
		return nil
	}
	x.rt = routeTarget(c, x.meshName())
	if target != nil {
		app, err := workload.AppLabels(target)
		if err != nil {
			x.stop("InvalidTarget", "Deployment %s: %v", target.Name, err)
			return nil
		}
		x.app = app
	}
	return nil
}

// meshName is the Kuma mesh of the Canary's data planes: the Canary's kuma.io/mesh
// annotation (an explicit choice), else the kuma.io/mesh label of the target's pods or of
// the namespace (Kuma 2.x), else the kuma.io/mesh annotation of the pods or the namespace
// (Kuma 1.x), else "default".
func (x *pass) meshName() string {
	if m := x.canary.Annotations[v1beta1.AnnotationMesh]; m != "" {
		return m
	}
	var podLabels, podAnnotations map[string]string
	if x.target != nil {
		podLabels, podAnnotations = x.target.Spec.Template.Labels, x.target.Spec.Template.Annotations
	}
	for _, m := range []map[string]string{podLabels, x.ns.labels, podAnnotations, x.ns.annotations} {
		if v := m[v1beta1.LabelMesh]; v != "" {
			return v
		}
	}
	return router.DefaultMesh
}

func routeTarget(c *v1beta1.Canary, mesh string) router.Target {
	return router.Target{
		Namespace: c.Namespace, Apex: c.ApexName(), Primary: c.PrimaryName(), Canary: c.CanaryName(),
		Port: c.Spec.Service.Port, Mesh: mesh, CanaryName: c.Name,
		Match: routeMatch(c.Match()),
	}
}

// routeMatch is analysis.match as the router takes it: headers, uri and method (the other
// fields are refused by the webhook and never reach here).
func routeMatch(in []v1beta1.HTTPMatchRequest) []router.Match {
	if len(in) == 0 {
		return nil
	}
	conv := func(s *v1beta1.StringMatch) *router.StringMatch {
		if s == nil {
			return nil
		}
		return &router.StringMatch{Exact: s.Exact, Prefix: s.Prefix, Suffix: s.Suffix, Regex: s.Regex}
	}
	out := make([]router.Match, 0, len(in))
	for _, m := range in {
		rm := router.Match{Path: conv(m.Uri), Method: conv(m.Method)}
		for name, v := range m.Headers {
			rm.Headers = append(rm.Headers, router.HeaderMatch{Name: strings.ToLower(name), Value: *conv(&v)})
		}
		sort.Slice(rm.Headers, func(i, j int) bool { return rm.Headers[i].Name < rm.Headers[j].Name })
		out = append(out, rm)
	}
	return out
}

// observe gathers what classify needs. It reads only the cache, except the
// confirm-rollout gates, which it calls only for a revision that is new, and ReplicaSets
// where the target's own status cannot tell what serves (identity.go).
func (x *pass) observe(ctx context.Context) (observation, error) {
	c := x.canary
	o := observation{
		phase: x.status.Phase, now: x.now, targetFound: x.target != nil,
		stable: x.status.StableRevision, canary: x.status.CanaryRevision, failed: x.status.FailedRevision,
	}
	if x.target == nil {
		return o, nil
	}
	o.live = x.revision()
	o.stable = x.stableRevision()
	o.command = x.canary.Annotations[v1beta1.AnnotationCommand]
	o.operatorPaused = meta.IsStatusConditionTrue(x.status.Conditions, ConditionPaused)
	analysing := o.phase.Analysing() || o.phase == v1beta1.PhasePromoting || o.phase == v1beta1.PhaseFinalising
	initializing := o.phase == v1beta1.PhaseInitializing || o.phase == v1beta1.PhaseTerminating || o.phase == ""
	switch {
	case initializing:
		serving, err := x.initialServing(ctx)
		if err != nil {
			return o, err
		}
		x.serving = serving
	case o.live != o.stable && !(analysing && o.live == o.canary):
		drift, serving, err := x.stableUnderAnotherHash(ctx)
		if err != nil {
			return o, err
		}
		x.serving, o.matchesServing = serving, drift
		if !drift && o.live != o.failed {
			o.gateClosed = x.gateClosed(ctx, v1beta1.ConfirmRolloutHook, o.live)
		}
	}
	switch {
	case o.phase.Analysing() && o.live == o.canary:
		d, err := x.canaryDeployment(ctx)
		if err != nil {
			return o, err
		}
		x.canaryD = d
		if d != nil && d.Annotations[v1beta1.AnnotationRevision] == o.canary {
			rd := workload.DeploymentReadiness(d, c.CanaryReadyThreshold())
			o.canaryReady, o.canaryFailed = rd.Ready, rd.Failed
		}
		o.hadTraffic = x.status.LastStepTime != nil
		start := x.now
		if x.status.ProgressStartTime != nil {
			start = x.status.ProgressStartTime.Time
		}
		o.waitDeadline = start.Add(c.ProgressDeadline())
		o.nextCheck = x.nextCheck()
	case (o.phase == v1beta1.PhasePromoting || o.phase == v1beta1.PhaseFinalising) && o.live == o.canary:
		rolled := x.target.Annotations[v1beta1.AnnotationStableRevision] == o.canary && !x.target.Spec.Paused
		rd := workload.DeploymentReadiness(x.target, c.PrimaryReadyThreshold())
		o.targetReady = rolled && rd.Ready
		o.targetFailed = rolled && rd.Failed
		start := x.now
		if x.status.ProgressStartTime != nil {
			start = x.status.ProgressStartTime.Time
		}
		o.rollDeadline = start.Add(targetProgressDeadline(x.target))
	}
	return o, nil
}

// targetProgressDeadline is the target's spec.progressDeadlineSeconds (the Deployment
// controller's default, 600 s, when unset): the bound of a promotion's rollout.
func targetProgressDeadline(d *appsv1.Deployment) time.Duration {
	secs := int32(600)
	if d.Spec.ProgressDeadlineSeconds != nil {
		secs = *d.Spec.ProgressDeadlineSeconds
	}
	return time.Duration(secs) * time.Second
}
