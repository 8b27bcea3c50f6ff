// Package rollout is coalmine's progression loop: a controller-runtime reconciler that
// takes each new pod-template revision of a guarded Deployment through a weighted canary
// (DESIGN §2): it creates the apex, primary and canary Services, starts a canary Deployment
// from the new template while the webhook keeps the target paused on the stable one, shifts
// traffic step by step through a Kuma route, analyses every interval, and then either
// promotes (unpauses the target so its own rolling update runs the new template) or rolls
// back (the target stays paused on the stable pods).
//
// All state lives in Canary.status, so a restarted or newly elected controller resumes
// exactly where the last one stopped; time comes from an injectable clock.
//
// The loop writes under coalmine's own identity only: the webhook lets coalmine's
// ServiceAccount unpause a Deployment whose template differs from its stable revision.
// The two packages agree through api/v1beta1's labels and annotations; neither imports the
// other.
//
// +kubebuilder:rbac:groups=coalmine.dev,resources=canaries,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=coalmine.dev,resources=canaries/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=coalmine.dev,resources=canaries/finalizers,verbs=update
// +kubebuilder:rbac:groups=coalmine.dev,resources=metrictemplates,verbs=get;list;watch
// +kubebuilder:rbac:groups=apps,resources=deployments,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups=apps,resources=replicasets,verbs=list
// +kubebuilder:rbac:groups="",resources=services,verbs=get;list;watch;create;update;patch;delete
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get;list;watch
// +kubebuilder:rbac:groups="",resources=secrets,verbs=get
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch
// +kubebuilder:rbac:groups=kuma.io,resources=trafficroutes;meshhttproutes,verbs=get;list;watch;create;update;patch;delete
package rollout
