// Package webhook holds coalmine's admission handlers (DESIGN §3).
//
// The Deployment mutator pauses a managed Deployment whose pod template moves away from
// its stable revision, so the old ReplicaSet keeps serving while the progression loop
// analyses the new revision on a canary. It decides from the AdmissionRequest alone (the
// stable revision is an annotation on the old object), so it makes no API call.
//
// The Canary command mutator stamps coalmine.dev/command-by with the authenticated user
// of a request that sets or changes coalmine.dev/command (coalmine promote, abort, ...),
// so the loop's Event names who asked from the request, never from a user's text.
//
// The Service validator refuses Services that would route around the canary split, the
// Canary and MetricTemplate validators refuse malformed specs with field paths.
//
// The package agrees with the progression loop through the annotations and labels of
// api/v1beta1 only; it never imports rollout.
//
// The Service validator reads through the manager's cache:
//
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch
// +kubebuilder:rbac:groups=coalmine.dev,resources=canaries,verbs=get;list;watch
package webhook
