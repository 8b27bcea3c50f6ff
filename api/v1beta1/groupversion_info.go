// Package v1beta1 holds coalmine's API: Canary and MetricTemplate in the coalmine.dev group.
// The Canary spec is field-for-field compatible with Flagger's flagger.app/v1beta1 Canary for
// everything the Kuma provider uses, so a Flagger Canary works with only apiVersion changed.
//
// +kubebuilder:object:generate=true
// +groupName=coalmine.dev
package v1beta1

import (
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/controller-runtime/pkg/scheme"
)

var (
	// GroupVersion is the group and version of every coalmine object.
	GroupVersion = schema.GroupVersion{Group: "coalmine.dev", Version: "v1beta1"}

	// SchemeBuilder registers the types of this package with a scheme.
	SchemeBuilder = &scheme.Builder{GroupVersion: GroupVersion}

	// AddToScheme adds the types of this package to a scheme.
	AddToScheme = SchemeBuilder.AddToScheme
)
