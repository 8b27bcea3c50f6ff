package router

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is Kuma's Kubernetes API group; both route kinds live in it.
var GroupVersion = schema.GroupVersion{Group: "kuma.io", Version: "v1alpha1"}

// AddToScheme registers TrafficRoute and MeshHTTPRoute (and their lists) under kuma.io/v1alpha1.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&TrafficRoute{}, &TrafficRouteList{},
		&MeshHTTPRoute{}, &MeshHTTPRouteList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}

// ServiceTagKey is the tag Kuma gives every inbound: the service identity.
const ServiceTagKey = "kuma.io/service"

// TrafficRoute is Kuma's kuma.io/v1alpha1 TrafficRoute as stored in Kubernetes:
// cluster-scoped, with the mesh as a top-level field beside spec (Kuma's CRD declares
// only apiVersion, kind, mesh, metadata and an opaque spec).
//
// +kubebuilder:object:root=true
type TrafficRoute struct {
	metav1.TypeMeta `json:",inline"`
	// Mesh the route belongs to.
	Mesh              string `json:"mesh,omitempty"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec TrafficRouteSpec `json:"spec"`
}

// TrafficRouteList is a list of TrafficRoutes.
//
// +kubebuilder:object:root=true
type TrafficRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []TrafficRoute `json:"items"`
}

// TrafficRouteSpec is the subset of Kuma's TrafficRoute that coalmine writes.
type TrafficRouteSpec struct {
	// Sources select the data plane proxies whose outbound traffic is routed.
	Sources []Selector `json:"sources"`
	// Destinations select the service the traffic is for.
	Destinations []Selector `json:"destinations"`
	// Conf says where that traffic goes.
	Conf TrafficRouteConf `json:"conf"`
}

// Selector matches proxies or services by tags.
type Selector struct {
	Match map[string]string `json:"match"`
}

// TrafficRouteConf holds either a weighted split or a single destination.
type TrafficRouteConf struct {
	// +optional
	Split []TrafficRouteSplit `json:"split,omitempty"`
	// +optional
	Destination map[string]string `json:"destination,omitempty"`
	// HTTP routes the requests that match, in order, before split applies (A/B testing).
	// +optional
	HTTP []TrafficRouteHTTP `json:"http,omitempty"`
}

// TrafficRouteHTTP sends the HTTP requests that match to a weighted split.
type TrafficRouteHTTP struct {
	Match TrafficRouteHTTPMatch `json:"match"`
	Split []TrafficRouteSplit   `json:"split"`
}

// TrafficRouteHTTPMatch is Kuma 1.x's conf.http[].match: every condition set must hold.
type TrafficRouteHTTPMatch struct {
	// +optional
	Method *KumaStringMatcher `json:"method,omitempty"`
	// +optional
	Path *KumaStringMatcher `json:"path,omitempty"`
	// +optional
	Headers map[string]KumaStringMatcher `json:"headers,omitempty"`
}

// KumaStringMatcher is TrafficRoute's string matcher: one of prefix, exact, regex (RE2,
// whole value).
type KumaStringMatcher struct {
	// +optional
	Prefix string `json:"prefix,omitempty"`
	// +optional
	Exact string `json:"exact,omitempty"`
	// +optional
	Regex string `json:"regex,omitempty"`
}

// TrafficRouteSplit is one weighted destination. Kuma requires the weight to be present,
// 0 included, so it is never omitted.
type TrafficRouteSplit struct {
	Weight      uint32            `json:"weight"`
	Destination map[string]string `json:"destination"`
}

// MeshHTTPRoute is Kuma's (>= 2.0) kuma.io/v1alpha1 MeshHTTPRoute: namespaced, its mesh
// given by the kuma.io/mesh label.
//
// +kubebuilder:object:root=true
type MeshHTTPRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MeshHTTPRouteSpec `json:"spec"`
}

// MeshHTTPRouteList is a list of MeshHTTPRoutes.
//
// +kubebuilder:object:root=true
type MeshHTTPRouteList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MeshHTTPRoute `json:"items"`
}

// MeshHTTPRouteSpec is the subset of Kuma's MeshHTTPRoute that coalmine writes.
type MeshHTTPRouteSpec struct {
	// TargetRef selects the proxies the route applies to; Mesh (all) when nil.
	// +optional
	TargetRef *TargetRef `json:"targetRef,omitempty"`
	// To lists the destinations and their rules.
	To []MeshHTTPRouteTo `json:"to"`
}

// TargetRef points at a Kuma resource: Mesh, or a MeshService by its kuma.io/service tag.
type TargetRef struct {
	Kind string `json:"kind"`
	// +optional
	Name string `json:"name,omitempty"`
}

// MeshHTTPRouteTo is the destination and the rules for its traffic.
type MeshHTTPRouteTo struct {
	TargetRef TargetRef           `json:"targetRef"`
	Rules     []MeshHTTPRouteRule `json:"rules"`
}

// MeshHTTPRouteRule routes the requests that match to weighted backends.
type MeshHTTPRouteRule struct {
	Matches []HTTPRouteMatch `json:"matches"`
	Default RuleConf         `json:"default"`
}

// HTTPRouteMatch selects requests: a path, and for A/B testing a method and headers.
type HTTPRouteMatch struct {
	// +optional
	Path *PathMatch `json:"path,omitempty"`
	// +optional
	Method string `json:"method,omitempty"`
	// +optional
	Headers []HTTPHeaderMatch `json:"headers,omitempty"`
}

// HTTPHeaderMatch is a MeshHTTPRoute header condition: Exact, Prefix, RegularExpression
// (RE2, whole value) or Present.
type HTTPHeaderMatch struct {
	Type string `json:"type"`
	Name string `json:"name"`
	// +optional
	Value string `json:"value,omitempty"`
}

// PathMatch matches the request path.
type PathMatch struct {
	Type  string `json:"type"`
	Value string `json:"value"`
}

// RuleConf is what a rule does with the matched requests.
type RuleConf struct {
	// +optional
	BackendRefs []BackendRef `json:"backendRefs,omitempty"`
}

// BackendRef is one weighted backend. The weight is never omitted: Kuma's CRD defaults a
// missing weight to 1, which would send traffic to a canary meant to get none.
type BackendRef struct {
	Kind   string `json:"kind"`
	Name   string `json:"name"`
	Weight uint32 `json:"weight"`
}
