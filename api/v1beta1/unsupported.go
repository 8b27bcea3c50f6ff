package v1beta1

import (
	"fmt"
	"slices"

	"k8s.io/apimachinery/pkg/util/validation/field"
)

// Refusal is a Flagger field coalmine declares but does not do, and what to use instead.
// The webhook denies a Canary that sets one and the loop reports it (Ready=False, reason
// InvalidSpec) with the same message, since the Canary webhook fails open.
// +kubebuilder:object:generate=false
type Refusal struct {
	// Path is the field, e.g. spec.analysis.mirror.
	Path string
	// Why it is refused and what to do instead.
	Why string
	set func(*Canary) bool
	// supported, for a field refused for its value only, are the values served; the
	// error is then the apiserver's "Unsupported value" with the value the Canary has.
	supported []string
	value     func(*Canary) string
}

// Refusals lists every refused Flagger Canary field. The README's migration table names
// the same fields as refused (TestMigrationTableMatchesCRD).
var Refusals = []Refusal{
	{Path: "spec.provider", Why: "coalmine routes with Kuma only (a TrafficRoute or MeshHTTPRoute)",
		supported: []string{"kuma"}, value: func(c *Canary) string { return c.Spec.Provider }},
	{Path: "spec.targetRef.kind", Why: "coalmine guards Deployments only (Flagger also takes a DaemonSet or a Knative Service)",
		supported: []string{"Deployment"}, value: func(c *Canary) string { return c.Spec.TargetRef.Kind }},
	{Path: "spec.targetRef.apiVersion", Why: "the target is an apps/v1 Deployment",
		supported: []string{"apps/v1"}, value: func(c *Canary) string { return c.Spec.TargetRef.APIVersion }},
	{Path: "spec.autoscalerRef.primaryScalerQueries", Why: "coalmine makes no -primary copy of the Deployment, so there is no primary autoscaler to configure: your autoscaler keeps scaling the Deployment itself; set its queries there and remove this",
		set: func(c *Canary) bool {
			return refs(c).AutoscalerRef != nil && len(refs(c).AutoscalerRef.PrimaryScalerQueries) > 0
		}},
	{Path: "spec.autoscalerRef.primaryScalerReplicas", Why: "coalmine makes no -primary copy of the Deployment, so there is no primary autoscaler to configure: set minReplicas/maxReplicas on your autoscaler itself and remove this",
		set: func(c *Canary) bool {
			return refs(c).AutoscalerRef != nil && refs(c).AutoscalerRef.PrimaryScalerReplicas != nil
		}},
	{Path: "spec.ingressRef", Why: "an NGINX ingress canary is Flagger's nginx provider; coalmine splits traffic inside the Kuma mesh at the apex Service, which splits an ingress's requests too when the ingress is in the mesh and calls the Service (NGINX: service-upstream); remove it",
		set: func(c *Canary) bool { return refs(c).IngressRef != nil }},
	{Path: "spec.routeRef", Why: "an APISIX route canary is Flagger's apisix provider; coalmine splits traffic inside the Kuma mesh at the apex Service; remove it",
		set: func(c *Canary) bool { return refs(c).RouteRef != nil }},
	{Path: "spec.upstreamRef", Why: "a Gloo upstream is Flagger's gloo provider; coalmine splits traffic inside the Kuma mesh at the apex Service; remove it",
		set: func(c *Canary) bool { return refs(c).UpstreamRef != nil }},
	{Path: "spec.canaryAnalysis", Why: "it is Flagger's deprecated name of spec.analysis (Flagger's own CRD drops it); rename it to spec.analysis",
		set: func(c *Canary) bool { return refs(c).CanaryAnalysis != nil }},
	{Path: "spec.service.timeout", Why: "coalmine's route only splits traffic; set request timeouts with a Kuma MeshTimeout (Kuma 1.x: Timeout) policy for the apex service",
		set: func(c *Canary) bool { return routing(c).Timeout != "" }},
	{Path: "spec.service.backendTimeout", Why: "it is a Gateway API setting; set backend timeouts with a Kuma MeshTimeout (Kuma 1.x: Timeout) policy",
		set: func(c *Canary) bool { return routing(c).BackendTimeout != "" }},
	{Path: "spec.service.headless", Why: "the Kuma split needs ClusterIP Services (its apex, primary and canary kuma.io/service tags); remove it",
		set: func(c *Canary) bool { return routing(c).Headless }},
	{Path: "spec.service.gateways", Why: "Istio VirtualService gateways are not used on Kuma; expose the apex Service through a Kuma MeshGateway or your ingress",
		set: func(c *Canary) bool { return len(routing(c).Gateways) > 0 }},
	{Path: "spec.service.gatewayRefs", Why: "Gateway API HTTPRoutes are Flagger's gatewayapi provider; coalmine splits traffic inside the Kuma mesh; expose the apex Service through a Kuma MeshGateway or your ingress",
		set: func(c *Canary) bool { return len(routing(c).GatewayRefs) > 0 }},
	{Path: "spec.service.hosts", Why: "hosts belong to an Istio VirtualService or a Gateway API HTTPRoute; on Kuma clients call the apex Service by name; remove it",
		set: func(c *Canary) bool { return len(routing(c).Hosts) > 0 }},
	{Path: "spec.service.delegation", Why: "VirtualService delegation is Istio's; remove it",
		set: func(c *Canary) bool { return routing(c).Delegation }},
	{Path: "spec.service.trafficPolicy", Why: "it is an Istio DestinationRule; use Kuma policies instead (MeshLoadBalancingStrategy, MeshCircuitBreaker, MeshHealthCheck; mTLS comes from the Mesh)",
		set: func(c *Canary) bool { return routing(c).TrafficPolicy != nil }},
	{Path: "spec.service.match", Why: "coalmine splits all of the apex Service's traffic; to send only some requests to the canary use spec.analysis.match (A/B testing)",
		set: func(c *Canary) bool { return len(routing(c).Match) > 0 }},
	{Path: "spec.service.rewrite", Why: "coalmine's route only splits traffic; rewrite URIs in your gateway or with a Kuma MeshHTTPRoute URLRewrite filter of a route of your own for another service",
		set: func(c *Canary) bool { return routing(c).Rewrite != nil }},
	{Path: "spec.service.retries", Why: "coalmine's route only splits traffic; set retries with a Kuma MeshRetry (Kuma 1.x: Retry) policy for the apex service",
		set: func(c *Canary) bool { return routing(c).Retries != nil }},
	{Path: "spec.service.headers", Why: "coalmine's route only splits traffic; change headers in your gateway or in the app",
		set: func(c *Canary) bool { return routing(c).Headers != nil }},
	{Path: "spec.service.mirror", Why: "mirroring is not possible with coalmine's Kuma routes (a TrafficRoute cannot mirror); send copies of the traffic to <app>-canary with a load tester instead",
		set: func(c *Canary) bool { return len(routing(c).Mirror) > 0 }},
	{Path: "spec.service.corsPolicy", Why: "CORS is an Istio VirtualService policy; answer CORS in your gateway or in the app",
		set: func(c *Canary) bool { return routing(c).CorsPolicy != nil }},
	{Path: "spec.service.meshName", Why: "it names an App Mesh mesh; on Kuma set the Canary's kuma.io/mesh annotation",
		set: func(c *Canary) bool { return routing(c).MeshName != "" }},
	{Path: "spec.service.backends", Why: "App Mesh virtual node backends are not needed on Kuma (every service in the mesh is reachable); remove it",
		set: func(c *Canary) bool { return len(routing(c).Backends) > 0 }},
	{Path: "spec.analysis.mirror", Why: "mirroring is not possible with coalmine's Kuma routes (a TrafficRoute cannot mirror); use blue/green (analysis.iterations) with a load tester calling <app>-canary",
		set: func(c *Canary) bool { return c.Spec.Analysis != nil && c.Spec.Analysis.Mirror }},
	{Path: "spec.analysis.mirrorWeight", Why: "mirroring is not possible with coalmine's Kuma routes; remove it with analysis.mirror",
		set: func(c *Canary) bool { return c.Spec.Analysis != nil && c.Spec.Analysis.MirrorWeight != 0 }},
	{Path: "spec.analysis.sessionAffinity", Why: "sticky canary sessions need a route that sets a cookie (Flagger does it on Istio and Gateway API); Kuma's TrafficRoute and MeshHTTPRoute cannot; use spec.analysis.match on a cookie header instead (A/B testing)",
		set: func(c *Canary) bool { return c.Spec.Analysis != nil && c.Spec.Analysis.SessionAffinity != nil }},
}

// UnsupportedFields names every Flagger field c sets that coalmine refuses, with what to
// use instead. The Canary webhook denies them; the loop reports them and does nothing
// else for the Canary until they are removed.
func UnsupportedFields(c *Canary) field.ErrorList {
	var errs field.ErrorList
	for _, r := range Refusals {
		if r.supported != nil {
			if v := r.value(c); v != "" && !slices.Contains(r.supported, v) {
				errs = append(errs, field.NotSupported(pathOf(r.Path), v, r.supported))
			}
			continue
		}
		if r.set(c) {
			errs = append(errs, field.Forbidden(pathOf(r.Path), fmt.Sprintf("not supported on Kuma: %s", r.Why)))
		}
	}
	return append(errs, MatchErrors(c)...)
}

// noRouting and noRefs stand for the other providers' fields of a Canary that sets none:
// read only.
var (
	noRouting OtherProviderRouting
	noRefs    FlaggerRefs
)

// routing is c's Service fields of other providers, the zero value when it sets none.
func routing(c *Canary) *OtherProviderRouting {
	if r := c.Spec.Service.OtherProviderRouting; r != nil {
		return r
	}
	return &noRouting
}

// refs is c's references of other providers, the zero value when it sets none.
func refs(c *Canary) *FlaggerRefs {
	if r := c.Spec.FlaggerRefs; r != nil {
		return r
	}
	return &noRefs
}

// pathOf turns "spec.a.b" into a field.Path.
func pathOf(s string) *field.Path {
	var p *field.Path
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == '.' {
			if p == nil {
				p = field.NewPath(s[start:i])
			} else {
				p = p.Child(s[start:i])
			}
			start = i + 1
		}
	}
	return p
}
