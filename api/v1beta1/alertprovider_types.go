package v1beta1

import (
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Alert provider types of AlertProviderSpec.Type. The first five are Flagger's;
// AlertProviderGeneric is a coalmine extension (a JSON POST any receiver can read).
const (
	AlertProviderSlack   = "slack"
	AlertProviderMSTeams = "msteams"
	AlertProviderDiscord = "discord"
	AlertProviderRocket  = "rocket"
	AlertProviderGChat   = "gchat"
	AlertProviderGeneric = "generic"
)

// Keys of the Secret named by AlertProviderSpec.SecretRef (Flagger's).
const (
	// AlertSecretAddressKey holds the webhook address; it wins over spec.address.
	AlertSecretAddressKey = "address"
	// AlertSecretTokenKey optionally holds a bearer token sent in the Authorization header
	// (Slack's chat.postMessage, a generic receiver).
	AlertSecretTokenKey = "token"
)

// AlertSeverity filters the alerts of a Canary: info gets every alert, warn gets warnings
// and errors, error only errors (Flagger's levels).
// +kubebuilder:validation:Enum="";info;warn;error
type AlertSeverity string

const (
	SeverityInfo  AlertSeverity = "info"
	SeverityWarn  AlertSeverity = "warn"
	SeverityError AlertSeverity = "error"
)

// CanaryAlert sends the alerts of a Canary at or above a severity to an AlertProvider
// (an entry of spec.analysis.alerts).
type CanaryAlert struct {
	// Name of the alert.
	// +kubebuilder:validation:MinLength=1
	Name string `json:"name"`

	// Severity is the lowest level sent: info (default), warn or error.
	// +optional
	Severity AlertSeverity `json:"severity,omitempty"`

	// ProviderRef is the AlertProvider; its namespace defaults to the Canary's.
	ProviderRef CrossNamespaceObjectReference `json:"providerRef"`
}

// AlertProviderSpec says where and how alerts are posted: field for field Flagger's.
// +kubebuilder:validation:XValidation:rule="has(self.address) || has(self.secretRef)",message="set spec.address or spec.secretRef (a Secret with the key address)"
type AlertProviderSpec struct {
	// Type of the provider: slack, msteams, discord, rocket, gchat, or generic (coalmine:
	// a JSON POST with the alert's name, namespace, severity, message and fields).
	// +kubebuilder:validation:Enum=slack;msteams;discord;rocket;gchat;generic
	Type string `json:"type"`

	// Channel the alert is posted to (slack, discord, rocket); default general.
	// +optional
	Channel string `json:"channel,omitempty"`

	// Username the alert is posted as (slack, discord, rocket); default coalmine.
	// +optional
	Username string `json:"username,omitempty"`

	// Address is the HTTP(S) webhook address of the provider.
	// +optional
	Address string `json:"address,omitempty"`

	// Proxy is the HTTP(S) address of a proxy to post through.
	// +optional
	Proxy string `json:"proxy,omitempty"`

	// SecretRef names a Secret in the provider's namespace whose key address holds the
	// webhook address (it wins over Address) and whose optional key token holds a bearer
	// token.
	// +optional
	SecretRef *corev1.LocalObjectReference `json:"secretRef,omitempty"`
}

// AlertProviderStatus is Flagger's AlertProvider status; coalmine does not write it.
type AlertProviderStatus struct {
	// Conditions of the provider.
	// +optional
	Conditions []AlertProviderCondition `json:"conditions,omitempty"`
}

// AlertProviderCondition is a condition of an AlertProvider (Flagger's shape).
type AlertProviderCondition struct {
	// Type of the condition.
	Type string `json:"type"`
	// Status of the condition: True, False or Unknown.
	Status corev1.ConditionStatus `json:"status"`
	// LastUpdateTime of the condition.
	// +optional
	LastUpdateTime metav1.Time `json:"lastUpdateTime,omitempty"`
	// LastTransitionTime of the condition.
	// +optional
	LastTransitionTime metav1.Time `json:"lastTransitionTime,omitempty"`
	// Reason of the current status.
	// +optional
	Reason string `json:"reason,omitempty"`
	// Message explains the current status.
	// +optional
	Message string `json:"message,omitempty"`
}

// AlertProvider is where a Canary's alerts go: a Slack, MS Teams, Discord, Rocket.Chat or
// Google Chat incoming webhook, or any HTTP receiver (generic). Flagger's AlertProvider in
// the coalmine.dev group.
//
// +kubebuilder:object:root=true
// +kubebuilder:subresource:status
// +kubebuilder:resource:categories=all
// +kubebuilder:printcolumn:name="Type",type=string,JSONPath=`.spec.type`
type AlertProvider struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec AlertProviderSpec `json:"spec"`
	// +optional
	Status AlertProviderStatus `json:"status,omitempty"`
}

// AlertProviderList is a list of AlertProviders.
//
// +kubebuilder:object:root=true
type AlertProviderList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []AlertProvider `json:"items"`
}

func init() {
	SchemeBuilder.Register(&AlertProvider{}, &AlertProviderList{})
}
