package certs

// The certificate manager's permissions, generated into manifests/rbac/role.yaml by
// `make manifests`. Webhook configurations: get and patch the two named objects only, never
// create or list. The Secret: create cannot be limited by name (the name is in the body,
// not the URL), so it is granted in coalmine's namespace only; reading and renewing it is
// limited to its name. The manager reads both straight from the API server, never through
// an informer, so no list or watch is needed.
//
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations;validatingwebhookconfigurations,verbs=get;patch,resourceNames=coalmine
// +kubebuilder:rbac:groups="",namespace=coalmine-system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=coalmine-system,resources=secrets,verbs=get;update,resourceNames=coalmine-webhook-tls
