package v1beta1

// Types of the Flagger Canary fields that coalmine declares for compatibility. A field
// the apiserver does not know is pruned silently, so a Flagger Canary that used one would
// get a different rollout without a word. Declared, it is kept, and UnsupportedFields
// (unsupported.go) refuses the ones coalmine does not do on Kuma, naming them and what to
// use instead. The JSON names and shapes are Flagger's (flagger.app/v1beta1, v1.36.1 plus
// the fields of its newer releases); the README's "Migrating from Flagger" table says
// what each one does here.

// AutoscalerReference names the autoscaler of the target (Flagger's autoscalerRef).
// Flagger copies it for its -primary Deployment; coalmine has no copy, so the autoscaler
// keeps scaling the Deployment itself and nothing needs to be done with it.
type AutoscalerReference struct {
	// APIVersion of the autoscaler, e.g. autoscaling/v2 or keda.sh/v1alpha1.
	// +optional
	APIVersion string `json:"apiVersion,omitempty"`

	// Kind of the autoscaler: HorizontalPodAutoscaler or ScaledObject.
	// +optional
	Kind string `json:"kind,omitempty"`

	// Name of the autoscaler.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// PrimaryScalerQueries are the queries of Flagger's primary ScaledObject; refused
	// (there is no primary autoscaler).
	// +optional
	PrimaryScalerQueries map[string]string `json:"primaryScalerQueries,omitempty"`

	// PrimaryScalerReplicas overrides the replicas of Flagger's primary autoscaler;
	// refused (there is no primary autoscaler).
	// +optional
	PrimaryScalerReplicas *ScalerReplicas `json:"primaryScalerReplicas,omitempty"`
}

// ScalerReplicas are replica bounds of an autoscaler.
type ScalerReplicas struct {
	// +optional
	MinReplicas *int32 `json:"minReplicas,omitempty"`
	// +optional
	MaxReplicas *int32 `json:"maxReplicas,omitempty"`
}

// SessionAffinity is Flagger's sticky-canary cookie (Istio and Gateway API only);
// refused on Kuma.
type SessionAffinity struct {
	// +optional
	CookieName string `json:"cookieName,omitempty"`
	// +optional
	Domain string `json:"domain,omitempty"`
	// +optional
	HttpOnly bool `json:"httpOnly,omitempty"`
	// +optional
	MaxAge int `json:"maxAge,omitempty"`
	// +optional
	Partitioned bool `json:"partitioned,omitempty"`
	// +optional
	Path string `json:"path,omitempty"`
	// +optional
	SameSite string `json:"sameSite,omitempty"`
	// +optional
	Secure bool `json:"secure,omitempty"`
	// +optional
	PrimaryCookieName string `json:"primaryCookieName,omitempty"`
}

// HTTPRewrite is Flagger's URI rewrite of the generated route; refused on Kuma.
type HTTPRewrite struct {
	// +optional
	Uri string `json:"uri,omitempty"`
	// +optional
	Authority string `json:"authority,omitempty"`
	// +optional
	Type string `json:"type,omitempty"`
}

// HTTPRetry is Istio's retry policy of the generated route; refused on Kuma.
type HTTPRetry struct {
	// +optional
	Attempts int `json:"attempts,omitempty"`
	// +optional
	PerTryTimeout string `json:"perTryTimeout,omitempty"`
	// +optional
	RetryOn string `json:"retryOn,omitempty"`
}

// HTTPHeaders are Istio's header operations of the generated route; refused on Kuma.
type HTTPHeaders struct {
	// +optional
	Request *HeaderOperations `json:"request,omitempty"`
	// +optional
	Response *HeaderOperations `json:"response,omitempty"`
}

// HeaderOperations set, add or remove headers.
type HeaderOperations struct {
	// +optional
	Set map[string]string `json:"set,omitempty"`
	// +optional
	Add map[string]string `json:"add,omitempty"`
	// +optional
	Remove []string `json:"remove,omitempty"`
}

// CorsPolicy is Istio's CORS policy of the generated route; refused on Kuma.
type CorsPolicy struct {
	// +optional
	AllowOrigin []string `json:"allowOrigin,omitempty"`
	// +optional
	AllowOrigins []StringMatch `json:"allowOrigins,omitempty"`
	// +optional
	AllowMethods []string `json:"allowMethods,omitempty"`
	// +optional
	AllowHeaders []string `json:"allowHeaders,omitempty"`
	// +optional
	ExposeHeaders []string `json:"exposeHeaders,omitempty"`
	// +optional
	MaxAge string `json:"maxAge,omitempty"`
	// +optional
	AllowCredentials bool `json:"allowCredentials,omitempty"`
}

// GatewayParentReference is a Gateway API parentRef (Flagger's service.gatewayRefs);
// refused on Kuma.
type GatewayParentReference struct {
	// +optional
	Group *string `json:"group,omitempty"`
	// +optional
	Kind *string `json:"kind,omitempty"`
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	Name      string  `json:"name"`
	// +optional
	SectionName *string `json:"sectionName,omitempty"`
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// HTTPRequestMirrorFilter is a Gateway API mirror (Flagger's service.mirror); refused on
// Kuma.
type HTTPRequestMirrorFilter struct {
	BackendRef BackendObjectReference `json:"backendRef"`
}

// BackendObjectReference is a Gateway API backend.
type BackendObjectReference struct {
	// +optional
	Group *string `json:"group,omitempty"`
	// +optional
	Kind *string `json:"kind,omitempty"`
	Name string  `json:"name"`
	// +optional
	Namespace *string `json:"namespace,omitempty"`
	// +optional
	Port *int32 `json:"port,omitempty"`
}

// UnmanagedMetadata are label and annotation keys coalmine must never add, change or
// remove on the Services it generates (Flagger's service.unmanagedMetadata). Coalmine never
// removes or changes a key it did not set; listed keys are also never set from
// spec.service.{apex,primary,canary}.
type UnmanagedMetadata struct {
	// +optional
	Annotations []string `json:"annotations,omitempty"`
	// +optional
	Labels []string `json:"labels,omitempty"`
}
