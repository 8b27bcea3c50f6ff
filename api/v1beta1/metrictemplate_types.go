package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// MetricTemplateSpec is a query and where to run it (Flagger-compatible).
type MetricTemplateSpec struct {
	// Provider is the metrics server.
	Provider MetricTemplateProvider `json:"provider"`
	// Query is a PromQL text/template with {{ name }}, {{ namespace }}, {{ target }},
	// {{ service }}, {{ interval }} and {{ variables.key }}.
	// +kubebuilder:validation:MinLength=1
	Query string `json:"query"`
}

// MetricTemplateProvider is a Prometheus server and how to reach it.
type MetricTemplateProvider struct {
	// Type of the provider; only prometheus is served.
	// +kubebuilder:validation:Enum=prometheus
	// +optional
	Type string `json:"type,omitempty"`
	// Address of the server; default the controller's --metrics-server.
	// +optional
	Address string `json:"address,omitempty"`
	// SecretRef names a Secret in the template's namespace with any of: username and
	// password (basic auth), token (bearer), ca.crt (a PEM CA bundle for a private CA).
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`
	// InsecureSkipVerify turns off TLS verification.
	// +optional
	InsecureSkipVerify bool `json:"insecureSkipVerify,omitempty"`
	// Headers are added to every query request, Flagger's shape (an http.Header: each
	// name has a list of values), e.g. X-Scope-OrgID: [tenant-a]. A single string value,
	// coalmine's earlier shape, is still read from stored objects.
	// +optional
	Headers ProviderHeaders `json:"headers,omitempty"`
	// Region of the provider (Flagger's, for CloudWatch and Stackdriver); Prometheus does
	// not use it, as in Flagger.
	// +optional
	Region string `json:"region,omitempty"`
	// Timeout of one query, a Go duration; default 10s.
	// +optional
	Timeout string `json:"timeout,omitempty"`
}

// MetricTemplate is a reusable Prometheus query for Canary analysis.
//
// +kubebuilder:object:root=true
// +kubebuilder:resource:categories=all
// +kubebuilder:printcolumn:name="Provider",type=string,JSONPath=`.spec.provider.type`
type MetricTemplate struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec MetricTemplateSpec `json:"spec"`
}

// MetricTemplateList is a list of MetricTemplates.
//
// +kubebuilder:object:root=true
type MetricTemplateList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []MetricTemplate `json:"items"`
}

func init() {
	SchemeBuilder.Register(&MetricTemplate{}, &MetricTemplateList{})
}
