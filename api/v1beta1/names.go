package v1beta1

// The labels and annotations through which the webhook and the progression loop agree.
// They are the contract of DESIGN §2-§4; neither package imports the other.
const (
	// LabelManaged marks a Deployment guarded by a Canary; the Deployment webhook's
	// objectSelector matches it.
	LabelManaged = "coalmine.dev/managed"

	// AnnotationStableRevision on a Deployment is the template revision serving traffic.
	// The loop moves it at promotion; the webhook reads it from the old object.
	AnnotationStableRevision = "coalmine.dev/stable-revision"

	// AnnotationRevision on a Deployment is the template revision the webhook last saw.
	AnnotationRevision = "coalmine.dev/revision"

	// AnnotationCanary set to "enabled" on a Deployment opts it in without a Canary object.
	AnnotationCanary = "coalmine.dev/canary"

	// AnnotationPrefix prefixes the per-field overrides of the annotation opt-in,
	// e.g. coalmine.dev/port, coalmine.dev/interval.
	AnnotationPrefix = "coalmine.dev/"

	// AnnotationServicePolicy on a namespace is enforce (default) or warn.
	AnnotationServicePolicy = "coalmine.dev/service-policy"

	// AnnotationDeleteServices "true" on a Canary deletes its Services with it.
	AnnotationDeleteServices = "coalmine.dev/delete-services"

	// AnnotationSkipCleanup "true" on a Canary being deleted lets its finalizer go without
	// deleting the route: the escape hatch when the mesh control plane is gone for good.
	// The Deployment is restored first either way.
	AnnotationSkipCleanup = "coalmine.dev/skip-route-cleanup"

	// LabelMesh is Kuma 2.x's way of naming the mesh, on a namespace or a pod template;
	// it wins over the kuma.io/mesh annotation of Kuma 1.x.
	LabelMesh = "kuma.io/mesh"

	// AnnotationCommand on a Canary is an operator's command (promote, abort, retry, pause,
	// resume; `coalmine promote` and friends set it). The loop carries it out once and
	// removes it, so GitOps tools, which never set it, have nothing to revert.
	AnnotationCommand = "coalmine.dev/command"
	// AnnotationCommandBy is who set AnnotationCommand, stamped by coalmine's Canary
	// webhook from the authenticated request (never taken from a user's text).
	AnnotationCommandBy = "coalmine.dev/command-by"

	// AnnotationRouteKind on a Canary picks TrafficRoute or MeshHTTPRoute.
	AnnotationRouteKind = "coalmine.dev/route-kind"

	// AnnotationMesh names the Kuma mesh, on a Canary or a namespace.
	AnnotationMesh = "kuma.io/mesh"

	// LabelSidecarInjection is Kuma's namespace label; "enabled" puts a namespace in scope.
	LabelSidecarInjection = "kuma.io/sidecar-injection"

	// Finalizer lets the loop restore the Deployment and routes when a Canary is deleted.
	Finalizer = "coalmine.dev/finalizer"

	// CanarySuffix and PrimarySuffix name the generated Services and the canary Deployment.
	CanarySuffix  = "-canary"
	PrimarySuffix = "-primary"
)

// Service policies of AnnotationServicePolicy.
const (
	ServicePolicyEnforce = "enforce"
	ServicePolicyWarn    = "warn"
)

// Route kinds of AnnotationRouteKind and --route-kind.
const (
	RouteKindTrafficRoute  = "TrafficRoute"
	RouteKindMeshHTTPRoute = "MeshHTTPRoute"
)

// Builtin metric names, with the seed's PromQL.
const (
	MetricRequestSuccessRate = "request-success-rate"
	MetricRequestDuration    = "request-duration"
)

// Operator commands of AnnotationCommand.
const (
	CommandPromote = "promote"
	CommandAbort   = "abort"
	CommandRetry   = "retry"
	CommandPause   = "pause"
	CommandResume  = "resume"
)

// Commands lists the operator commands.
var Commands = []string{CommandPromote, CommandAbort, CommandRetry, CommandPause, CommandResume}

// Analysing reports whether a revision is under analysis in phase p (the canary
// Deployment runs and carries weight): Progressing, or WaitingPromotion.
func (p CanaryPhase) Analysing() bool {
	return p == PhaseProgressing || p == PhaseWaitingPromotion
}
