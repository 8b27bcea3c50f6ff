package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// CanarySpec says which Deployment to guard and how to analyse a new revision of it.
type CanarySpec struct {
	// Provider is the service mesh; only "kuma" is served. Kept for Flagger compatibility.
	// +optional
	// +kubebuilder:validation:Enum=kuma;""
	Provider string `json:"provider,omitempty"`

	// MetricsServer overrides the Prometheus address of the builtin metrics for this Canary.
	// +optional
	MetricsServer string `json:"metricsServer,omitempty"`

	// TargetRef is the Deployment to guard. It must be in the Canary's namespace.
	TargetRef LocalObjectReference `json:"targetRef"`

	// ProgressDeadlineSeconds is how long the canary may take to become ready before the
	// rollout is rolled back. Default 600.
	// +optional
	// +kubebuilder:validation:Minimum=1
	ProgressDeadlineSeconds *int32 `json:"progressDeadlineSeconds,omitempty"`

	// Service describes the apex, primary and canary Services coalmine owns.
	Service CanaryService `json:"service"`

	// SkipAnalysis promotes a new revision without running the analysis.
	// +optional
	SkipAnalysis bool `json:"skipAnalysis,omitempty"`

	// Suspend stops the progression where it is; nothing is routed or rolled back.
	// +optional
	Suspend bool `json:"suspend,omitempty"`

	// RevertOnDeletion is Flagger's flag to give the target back when the Canary is
	// deleted. Coalmine always does (its finalizer unpauses the Deployment and routes all
	// traffic to it), so true and false behave as Flagger's true.
	// +optional
	RevertOnDeletion bool `json:"revertOnDeletion,omitempty"`

	// Analysis is the schedule, steps and metrics of a rollout.
	// +optional
	Analysis *CanaryAnalysis `json:"analysis,omitempty"`

	// FlaggerRefs are Flagger's references that coalmine does not act on: the autoscaler
	// (which keeps scaling the Deployment itself) and the other providers' objects (refused
	// by name). A pointer, so that a Canary without them carries 8 bytes for them, not 40.
	*FlaggerRefs `json:",inline"`

	// CanaryReplicas (coalmine extension) runs the canary Deployment on fewer replicas than
	// the target: a number (3) or a percentage of the target's replicas ("25%", rounded
	// up), at least 1. Unset, the canary has as many replicas as the target. With fewer
	// canary pods each carries a larger share of the traffic at a given weight.
	// +optional
	// +kubebuilder:validation:XIntOrString
	CanaryReplicas *intstr.IntOrString `json:"canaryReplicas,omitempty"`
}

// FlaggerRefs are the Canary's references that coalmine does not act on: autoscalerRef
// is checked and left to the autoscaler, the other providers' references are refused with
// what to do on Kuma instead.
type FlaggerRefs struct {
	// AutoscalerRef is Flagger's reference to the target's HorizontalPodAutoscaler or
	// ScaledObject. Coalmine makes no -primary copy, so the autoscaler keeps scaling the
	// Deployment itself; primaryScalerQueries and primaryScalerReplicas are refused.
	// +optional
	AutoscalerRef *AutoscalerReference `json:"autoscalerRef,omitempty"`

	// IngressRef is Flagger's NGINX ingress reference; refused (coalmine splits traffic
	// inside the Kuma mesh).
	// +optional
	IngressRef *LocalObjectReference `json:"ingressRef,omitempty"`

	// RouteRef is Flagger's APISIX route reference; refused.
	// +optional
	RouteRef *LocalObjectReference `json:"routeRef,omitempty"`

	// UpstreamRef is Flagger's Gloo upstream reference; refused.
	// +optional
	UpstreamRef *CrossNamespaceObjectReference `json:"upstreamRef,omitempty"`

	// CanaryAnalysis is Flagger's deprecated name of analysis; refused (rename it).
	// +optional
	CanaryAnalysis *runtime.RawExtension `json:"canaryAnalysis,omitempty"`
}

// LocalObjectReference names an object in the Canary's namespace.
type LocalObjectReference struct {
	// APIVersion of the referent, apps/v1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`

	// Kind of the referent; only Deployment is served.
	// +optional
	Kind string `json:"kind,omitempty"`

	// Name of the referent.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
}

// CanaryService is the Service set coalmine creates: <name>, <name>-primary, <name>-canary.
type CanaryService struct {
	// Name of the apex Service; defaults to the target's name.
	// +optional
	Name string `json:"name,omitempty"`

	// Port is the ClusterIP port of all three Services.
	// +kubebuilder:validation:Minimum=1
	// +kubebuilder:validation:Maximum=65535
	Port int32 `json:"port"`

	// PortDiscovery adds every other container port of the target's pod template to the
	// three Services (named after the container port, else tcp-<container>-<index>), as
	// Flagger does. Only the port of spec.service is split by the route: the others reach
	// the pods each Service selects.
	// +optional
	PortDiscovery bool `json:"portDiscovery,omitempty"`

	// TargetPort is the container port, by name or number; defaults to Port.
	// +optional
	TargetPort intstr.IntOrString `json:"targetPort,omitempty"`

	// PortName is the name of the Service port, http (default) or grpc.
	// +optional
	PortName string `json:"portName,omitempty"`

	// AppProtocol of the Service port.
	// +optional
	AppProtocol string `json:"appProtocol,omitempty"`

	// Apex holds extra metadata of the apex Service.
	// +optional
	Apex *CustomMetadata `json:"apex,omitempty"`

	// Primary holds extra metadata of the primary Service.
	// +optional
	Primary *CustomMetadata `json:"primary,omitempty"`

	// Canary holds extra metadata of the canary Service.
	// +optional
	Canary *CustomMetadata `json:"canary,omitempty"`

	// TrafficDistribution is set on the three Services (Kubernetes' spec.trafficDistribution).
	// +optional
	TrafficDistribution string `json:"trafficDistribution,omitempty"`

	// UnmanagedMetadata are label and annotation keys coalmine never sets on its Services.
	// +optional
	UnmanagedMetadata *UnmanagedMetadata `json:"unmanagedMetadata,omitempty"`

	// OtherProviderRouting are Flagger's fields for other providers (Istio, Gateway API,
	// App Mesh, Contour, ...), declared so that they are kept and refused by name with what
	// to use on Kuma instead. A pointer: a Canary without them carries 8 bytes for them,
	// not 248.
	*OtherProviderRouting `json:",inline"`
}

// OtherProviderRouting are the Service fields of Flagger's other providers; each is
// refused with what to use on Kuma instead.
type OtherProviderRouting struct {
	// Timeout of a request (Istio, Gateway API); refused.
	// +optional
	Timeout string `json:"timeout,omitempty"`
	// Headless Services; refused.
	// +optional
	Headless bool `json:"headless,omitempty"`
	// BackendTimeout (Gateway API); refused.
	// +optional
	BackendTimeout string `json:"backendTimeout,omitempty"`
	// Gateways of an Istio VirtualService; refused.
	// +optional
	Gateways []string `json:"gateways,omitempty"`
	// GatewayRefs of a Gateway API HTTPRoute; refused.
	// +optional
	GatewayRefs []GatewayParentReference `json:"gatewayRefs,omitempty"`
	// Hosts of an Istio VirtualService or HTTPRoute; refused.
	// +optional
	Hosts []string `json:"hosts,omitempty"`
	// Delegation (Istio); refused.
	// +optional
	Delegation bool `json:"delegation,omitempty"`
	// TrafficPolicy of an Istio DestinationRule; refused.
	// +optional
	TrafficPolicy *runtime.RawExtension `json:"trafficPolicy,omitempty"`
	// Match conditions of the generated route; refused (A/B testing is analysis.match).
	// +optional
	Match []HTTPMatchRequest `json:"match,omitempty"`
	// Rewrite of the request URI; refused.
	// +optional
	Rewrite *HTTPRewrite `json:"rewrite,omitempty"`
	// Retries of the generated route; refused.
	// +optional
	Retries *HTTPRetry `json:"retries,omitempty"`
	// Headers operations of the generated route; refused.
	// +optional
	Headers *HTTPHeaders `json:"headers,omitempty"`
	// Mirror (Gateway API); refused.
	// +optional
	Mirror []HTTPRequestMirrorFilter `json:"mirror,omitempty"`
	// CorsPolicy of an Istio VirtualService; refused.
	// +optional
	CorsPolicy *CorsPolicy `json:"corsPolicy,omitempty"`
	// MeshName of App Mesh; refused.
	// +optional
	MeshName string `json:"meshName,omitempty"`
	// Backends of App Mesh virtual nodes; refused.
	// +optional
	Backends []string `json:"backends,omitempty"`
}

// CustomMetadata is extra labels and annotations for a generated object.
type CustomMetadata struct {
	// +optional
	Labels map[string]string `json:"labels,omitempty"`
	// +optional
	Annotations map[string]string `json:"annotations,omitempty"`
}

// CanaryAnalysis is the schedule and the checks of a rollout.
type CanaryAnalysis struct {
	// Interval between two steps, a Go duration; default 60s.
	// +optional
	Interval string `json:"interval,omitempty"`

	// Iterations selects Flagger's blue/green (no match) or A/B testing (with match): the
	// number of passed checks before the revision is promoted. Set, it wins over
	// stepWeight, stepWeights and maxWeight, as in Flagger. Blue/green analyses the canary
	// on traffic sent straight to <app>-canary (a load tester) while the route keeps 100%
	// on primary, then switches the route to the canary, checks once more and promotes.
	// +optional
	// +kubebuilder:validation:Minimum=0
	Iterations int `json:"iterations,omitempty"`

	// Threshold is the number of failed checks that triggers a rollback; default 1, as in
	// Flagger (whose CRD requires it).
	// +optional
	// +kubebuilder:validation:Minimum=0
	Threshold int `json:"threshold,omitempty"`

	// MaxWeight is the highest canary weight, in percent, before promotion; default 100,
	// as in Flagger.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	MaxWeight int `json:"maxWeight,omitempty"`

	// StepWeight is the weight added at each step, in percent; default 10 when neither
	// stepWeight, stepWeights nor iterations is set (Flagger's CRD requires one).
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	StepWeight int `json:"stepWeight,omitempty"`

	// StepWeights are explicit weights, increasing; they win over StepWeight.
	// +optional
	StepWeights []int `json:"stepWeights,omitempty"`

	// StepWeightPromotion is the weight moved back to primary per interval at promotion;
	// zero moves it all at once.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	StepWeightPromotion int `json:"stepWeightPromotion,omitempty"`

	// CanaryReadyThreshold is the percentage of canary replicas that must be available; default 100.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	CanaryReadyThreshold *int `json:"canaryReadyThreshold,omitempty"`

	// PrimaryReadyThreshold is the percentage of target replicas that must be available
	// after promotion; default 100.
	// +optional
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=100
	PrimaryReadyThreshold *int `json:"primaryReadyThreshold,omitempty"`

	// Metrics are the checks run at every interval.
	// +optional
	Metrics []CanaryMetric `json:"metrics,omitempty"`

	// Webhooks are called at rollout hooks, as Flagger does.
	// +optional
	Webhooks []CanaryWebhook `json:"webhooks,omitempty"`

	// Alerts send the Canary's alerts to AlertProviders, as Flagger does.
	// +optional
	Alerts []CanaryAlert `json:"alerts,omitempty"`

	// Mirror is Flagger's traffic mirroring for blue/green; refused (Kuma's TrafficRoute
	// cannot mirror).
	// +optional
	Mirror bool `json:"mirror,omitempty"`

	// MirrorWeight is the mirrored percentage; refused with mirror.
	// +optional
	MirrorWeight int `json:"mirrorWeight,omitempty"`

	// SessionAffinity is Flagger's sticky-canary cookie; refused (Kuma's routes cannot set
	// a cookie).
	// +optional
	SessionAffinity *SessionAffinity `json:"sessionAffinity,omitempty"`

	// Match are Flagger's A/B testing conditions (Istio's HTTPMatchRequest): a request
	// that meets every condition of one entry is routed by the canary weight, all others go
	// to primary. On Kuma coalmine honours headers (a cookie is the "cookie" header), uri
	// and method; the other fields are refused. With iterations, the matching requests go
	// to the canary for the whole analysis (A/B testing).
	// +optional
	Match []HTTPMatchRequest `json:"match,omitempty"`
}

// CanaryMetric is one check of the analysis.
type CanaryMetric struct {
	// Name is a builtin (request-success-rate, request-duration) or any name with a TemplateRef.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Interval is the range of the query, a Go duration; default 1m.
	// +optional
	Interval string `json:"interval,omitempty"`

	// Threshold: a builtin success rate fails below it (percent), a duration above it (ms);
	// a template metric fails above it.
	// +optional
	Threshold float64 `json:"threshold,omitempty"`

	// ThresholdRange overrides Threshold with an accepted [min, max].
	// +optional
	ThresholdRange *CanaryThresholdRange `json:"thresholdRange,omitempty"`

	// TemplateRef points at a MetricTemplate.
	// +optional
	TemplateRef *CrossNamespaceObjectReference `json:"templateRef,omitempty"`

	// Query is Flagger's deprecated inline PromQL (use templateRef): without templateRef,
	// a metric that is not a builtin runs it against the Canary's metrics server, and
	// fails above threshold (or outside thresholdRange).
	// +optional
	Query string `json:"query,omitempty"`

	// TemplateVariables are extra values for the template, as {{ variables.key }}.
	// +optional
	TemplateVariables map[string]string `json:"templateVariables,omitempty"`

	// OnNoData says what an empty or NaN result means: fail (default, as Flagger) or skip.
	// +optional
	// +kubebuilder:validation:Enum=fail;skip
	OnNoData NoDataPolicy `json:"onNoData,omitempty"`
}

// NoDataPolicy is what an empty query result counts as.
type NoDataPolicy string

const (
	// NoDataFail counts an empty or NaN result as a failed check.
	NoDataFail NoDataPolicy = "fail"
	// NoDataSkip ignores an empty or NaN result: neither passed nor failed.
	NoDataSkip NoDataPolicy = "skip"
)

// HTTPMatchRequest is Istio's HTTPMatchRequest as Flagger's analysis.match carries it.
// Coalmine routes on Kuma by headers, uri and method; the other fields are declared so
// that a Flagger Canary keeps them (the apiserver would prune them), and refused.
type HTTPMatchRequest struct {
	// +optional
	Name string `json:"name,omitempty"`
	// Uri matches the request path.
	// +optional
	Uri *StringMatch `json:"uri,omitempty"`
	// Not served on Kuma.
	// +optional
	Scheme *StringMatch `json:"scheme,omitempty"`
	// Method matches the HTTP method (exact on MeshHTTPRoute).
	// +optional
	Method *StringMatch `json:"method,omitempty"`
	// Not served on Kuma.
	// +optional
	Authority *StringMatch `json:"authority,omitempty"`
	// Headers match request headers by lower-case name; cookies are the "cookie" header.
	// +optional
	Headers map[string]StringMatch `json:"headers,omitempty"`
	// Not served on Kuma.
	// +optional
	Port uint32 `json:"port,omitempty"`
	// Not served on Kuma.
	// +optional
	SourceLabels map[string]string `json:"sourceLabels,omitempty"`
	// Not served on Kuma.
	// +optional
	Gateways []string `json:"gateways,omitempty"`
	// Not served on Kuma.
	// +optional
	QueryParams map[string]StringMatch `json:"queryParams,omitempty"`
	// Not served on Kuma.
	// +optional
	IgnoreUriCase bool `json:"ignoreUriCase,omitempty"`
	// Not served on Kuma.
	// +optional
	WithoutHeaders map[string]StringMatch `json:"withoutHeaders,omitempty"`
	// Not served on Kuma.
	// +optional
	SourceNamespace string `json:"sourceNamespace,omitempty"`
}

// StringMatch is Istio's string matcher: exactly one of its fields is set. Regex is RE2,
// matched against the whole value.
type StringMatch struct {
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +optional
	Suffix string `json:"suffix,omitempty"`
	// +optional
	Regex string `json:"regex,omitempty"`
}

// CanaryThresholdRange is an accepted value range; either bound may be left open.
type CanaryThresholdRange struct {
	// +optional
	Min *float64 `json:"min,omitempty"`
	// +optional
	Max *float64 `json:"max,omitempty"`
}

// CrossNamespaceObjectReference names an object, by default in the referrer's namespace.
type CrossNamespaceObjectReference struct {
	// APIVersion of the referent (Flagger's; not read).
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`
	// Kind of the referent (Flagger's; not read).
	// +optional
	Kind string `json:"kind,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// +optional
	Namespace string `json:"namespace,omitempty"`
}

// HookType is when a webhook is called.
// +kubebuilder:validation:Enum="";pre-rollout;rollout;post-rollout;rollback;event;confirm-rollout;confirm-promotion;confirm-traffic-increase
type HookType string

const (
	PreRolloutHook       HookType = "pre-rollout"
	RolloutHook          HookType = "rollout"
	PostRolloutHook      HookType = "post-rollout"
	RollbackHook         HookType = "rollback"
	EventHook            HookType = "event"
	ConfirmRolloutHook   HookType = "confirm-rollout"
	ConfirmPromotionHook HookType = "confirm-promotion"
	// ConfirmTrafficIncreaseHook gates each increase of the canary weight: the weight
	// stays where it is (no analysis that interval) until it answers 2xx.
	ConfirmTrafficIncreaseHook HookType = "confirm-traffic-increase"
)

// CanaryWebhook is an HTTP call made during the rollout (Flagger's webhooks).
type CanaryWebhook struct {
	// Type is when it is called; default rollout.
	// +optional
	Type HookType `json:"type,omitempty"`
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`
	// URL receives a POST with the Canary's name, namespace, phase and Metadata.
	// +kubebuilder:validation:MinLength=1
	URL string `json:"url"`
	// Timeout, a Go duration; default 10s.
	// +optional
	Timeout string `json:"timeout,omitempty"`
	// +optional
	Metadata map[string]string `json:"metadata,omitempty"`
	// +optional
	MuteAlert bool `json:"muteAlert,omitempty"`
	// +optional
	Retries int `json:"retries,omitempty"`
	// DisableTLS turns off TLS verification of the webhook's https URL.
	// +optional
	DisableTLS bool `json:"disableTLS,omitempty"`
}

// CanaryPhase is where a rollout is; the names are Flagger's.
// +kubebuilder:validation:Enum="";Initializing;Initialized;Waiting;Progressing;WaitingPromotion;Promoting;Finalising;Succeeded;Failed;Terminating
type CanaryPhase string

const (
	PhaseInitializing CanaryPhase = "Initializing"
	PhaseInitialized  CanaryPhase = "Initialized"
	PhaseWaiting      CanaryPhase = "Waiting"
	PhaseProgressing  CanaryPhase = "Progressing"
	// PhaseWaitingPromotion: the analysis passed at the maximum weight and a
	// confirm-promotion gate is closed; the analysis goes on (Flagger's phase).
	PhaseWaitingPromotion CanaryPhase = "WaitingPromotion"
	PhasePromoting        CanaryPhase = "Promoting"
	PhaseFinalising       CanaryPhase = "Finalising"
	PhaseSucceeded        CanaryPhase = "Succeeded"
	PhaseFailed           CanaryPhase = "Failed"
	PhaseTerminating      CanaryPhase = "Terminating"
)

// MetricOutcome is the result of one check.
// +kubebuilder:validation:Enum=Passed;Failed;NoData;Error;Skipped
type MetricOutcome string

const (
	// MetricPassed: the value is within the threshold.
	MetricPassed MetricOutcome = "Passed"
	// MetricFailed: the value is outside the threshold.
	MetricFailed MetricOutcome = "Failed"
	// MetricNoData: the query returned nothing or NaN (no traffic yet).
	MetricNoData MetricOutcome = "NoData"
	// MetricError: the query could not be run (server down, bad query, auth).
	MetricError MetricOutcome = "Error"
	// MetricSkipped: no data and onNoData is skip.
	MetricSkipped MetricOutcome = "Skipped"
)

// MetricStatus is the last result of one metric.
type MetricStatus struct {
	Name string `json:"name"`
	// Value as Prometheus printed it; empty when there was none.
	// +optional
	Value string `json:"value,omitempty"`
	// +optional
	Outcome MetricOutcome `json:"outcome,omitempty"`
	// Message explains a failed, missing or errored check.
	// +optional
	Message string `json:"message,omitempty"`
	// +optional
	LastCheckTime *metav1.Time `json:"lastCheckTime,omitempty"`
}

// CanaryStatus is the whole state of a rollout: a restarted controller resumes from it.
type CanaryStatus struct {
	// +optional
	Phase CanaryPhase `json:"phase,omitempty"`
	// ObservedGeneration is the Canary generation the status was written for.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// CanaryWeight is the percentage of traffic routed to the canary.
	// +optional
	CanaryWeight int `json:"canaryWeight"`
	// FailedChecks counts failed checks of the current revision.
	// +optional
	FailedChecks int `json:"failedChecks"`
	// Iterations counts analysis rounds of the current revision.
	// +optional
	Iterations int `json:"iterations"`
	// PassedChecks counts the checks of the current revision that passed; blue/green and
	// A/B testing promote after analysis.iterations of them (Flagger's iterations).
	// +optional
	PassedChecks int `json:"passedChecks,omitempty"`
	// StableRevision is the template revision serving primary traffic.
	// +optional
	StableRevision string `json:"stableRevision,omitempty"`
	// StableDeploymentRevision is the target's deployment.kubernetes.io/revision when the
	// stable revision was recorded: the Deployment controller's number of the ReplicaSet
	// that ran it. A template whose hash differs from the stable revision while the
	// controller still runs it, fully, on that ReplicaSet is the stable one under another
	// hash (representation drift); one that rolled unguarded got a new ReplicaSet, and so a
	// new number, and is not.
	// +optional
	StableDeploymentRevision string `json:"stableDeploymentRevision,omitempty"`
	// CanaryRevision is the template revision under analysis.
	// +optional
	CanaryRevision string `json:"canaryRevision,omitempty"`
	// LastPromotedRevision is the last revision that reached Succeeded.
	// +optional
	LastPromotedRevision string `json:"lastPromotedRevision,omitempty"`
	// FailedRevision is the last revision rolled back; it is not tried again until it changes.
	// +optional
	FailedRevision string `json:"failedRevision,omitempty"`
	// LastTransitionTime is when the phase last changed.
	// +optional
	LastTransitionTime *metav1.Time `json:"lastTransitionTime,omitempty"`
	// LastStepTime is when the weight last moved or the analysis last ran.
	// +optional
	LastStepTime *metav1.Time `json:"lastStepTime,omitempty"`
	// ProgressStartTime is when the current wait for readiness began.
	// +optional
	ProgressStartTime *metav1.Time `json:"progressStartTime,omitempty"`
	// Message says why the phase is what it is, e.g. the metric that failed.
	// +optional
	Message string `json:"message,omitempty"`
	// Metrics holds the last result of every metric.
	// +optional
	// +listType=map
	// +listMapKey=name
	Metrics []MetricStatus `json:"metrics,omitempty"`
	// Ownership is what this Canary acquired and must give back: finalize and renames act
	// on exactly these objects. Empty until the Canary acquired its target.
	// +optional
	Ownership *CanaryOwnership `json:"ownership,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}

// CanaryOwnership records the objects a Canary took charge of, when it took them.
type CanaryOwnership struct {
	// Target is the guarded Deployment; a Deployment of that name with another UID was
	// re-created and is acquired again.
	Target OwnedObject `json:"target"`
	// UserPaused is the user's own spec.paused of the target (set before coalmine held it,
	// or while no revision was held); finalize puts it back.
	// +optional
	UserPaused bool `json:"userPaused,omitempty"`
	// Route is the route this Canary writes.
	// +optional
	Route *OwnedRoute `json:"route,omitempty"`
	// Services are the Services this Canary created or adopted.
	// +optional
	// +listType=map
	// +listMapKey=name
	Services []OwnedService `json:"services,omitempty"`
}

// OwnedObject names an object by name and UID.
type OwnedObject struct {
	Name string `json:"name"`
	// +optional
	UID string `json:"uid,omitempty"`
}

// OwnedRoute is a route coalmine writes: its kind, name, mesh and the cluster it lives in.
type OwnedRoute struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
	// Service is the apex Service whose traffic the route splits.
	// +optional
	Service string `json:"service,omitempty"`
	// Namespace is empty for a cluster-scoped TrafficRoute.
	// +optional
	Namespace string `json:"namespace,omitempty"`
	// +optional
	Mesh string `json:"mesh,omitempty"`
	// Cluster is "local", or "mesh" for the mesh control plane's cluster (--mesh-kubeconfig).
	// +optional
	Cluster string `json:"cluster,omitempty"`
}

// OwnedService is a Service of the Canary; Adopted ones existed before it.
type OwnedService struct {
	Name string `json:"name"`
	// +optional
	Adopted bool `json:"adopted,omitempty"`
}

// Canary guards a Deployment: each new pod-template revision is analysed on a weighted
// canary before it rolls.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=all
// +kubebuilder:printcolumn:name="Phase",type=string,JSONPath=`.status.phase`
// +kubebuilder:printcolumn:name="Weight",type=integer,JSONPath=`.status.canaryWeight`
// +kubebuilder:printcolumn:name="FailedChecks",type=integer,JSONPath=`.status.failedChecks`
// +kubebuilder:printcolumn:name="Revision",type=string,JSONPath=`.status.canaryRevision`
// +kubebuilder:printcolumn:name="LastTransition",type=date,JSONPath=`.status.lastTransitionTime`
type Canary struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   CanarySpec   `json:"spec"`
	Status CanaryStatus `json:"status,omitempty"`

	// The struct is kept at most 760 bytes: with the 8-byte header the allocator puts before
	// an object over 512 bytes that holds pointers, that fills the 768-byte size class, and
	// each cached Canary and each pass's copy is one such object (896 bytes one field later).
	// Fields a valid Canary leaves unset go behind FlaggerRefs and OtherProviderRouting
	// (TestCanaryStaysInItsSizeClass).
}

// CanaryList is a list of Canaries.
//
// +kubebuilder:object:root=true
type CanaryList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Canary `json:"items"`
}

func init() {
	SchemeBuilder.Register(&Canary{}, &CanaryList{})
}
