package webhook

import (
	"context"
	"errors"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The paths the handlers are served at; manifests/webhook/base/webhooks.yaml points at them.
const (
	PathMutateDeployment       = "/mutate-apps-v1-deployment"
	PathMutateCanary           = "/mutate-coalmine-dev-v1beta1-canary"
	PathValidateService        = "/validate-v1-service"
	PathValidateCanary         = "/validate-coalmine-dev-v1beta1-canary"
	PathValidateMetricTemplate = "/validate-coalmine-dev-v1beta1-metrictemplate"
)

// Options configures the admission handlers.
type Options struct {
	// ControllerUsername is the authenticated user coalmine's own requests arrive as,
	// e.g. system:serviceaccount:coalmine-system:coalmine (learned at start-up with a
	// SelfSubjectReview). Its Deployment updates may unpause and its Services are its own.
	ControllerUsername string
}

// Register serves the handlers on mgr's webhook server. Panics in a handler become
// 500 responses (admission.Webhook recovers them). Latency is measured by
// controller-runtime per path: controller_runtime_webhook_latency_seconds{webhook=<path>}.
//
// The Service validator reads Namespaces, Deployments and Canaries from mgr's cache; their
// informers are registered here so they start and sync with the manager rather than on the
// first admission request.
func Register(mgr ctrl.Manager, opts Options) error {
	if opts.ControllerUsername == "" {
		return errors.New("register webhooks: Options.ControllerUsername is empty; coalmine could not tell its own requests apart")
	}
	for _, obj := range []client.Object{&corev1.Namespace{}, &appsv1.Deployment{}, &v1beta1.Canary{}} {
		if _, err := mgr.GetCache().GetInformer(context.Background(), obj, cache.BlockUntilSynced(false)); err != nil {
			return fmt.Errorf("register webhooks: get informer for %T: %w", obj, err)
		}
	}
	srv := mgr.GetWebhookServer()
	for path, h := range Handlers(mgr.GetClient(), opts) {
		srv.Register(path, (&admission.Webhook{Handler: h}).WithRecoverPanic(true))
	}
	return nil
}

// Handlers returns the admission handlers by path, reading through c. Register serves
// them; tests and benchmarks may serve them on their own mux.
func Handlers(c client.Reader, opts Options) map[string]admission.Handler {
	return map[string]admission.Handler{
		PathMutateDeployment:       &DeploymentMutator{ControllerUsername: opts.ControllerUsername},
		PathMutateCanary:           &CanaryCommandMutator{},
		PathValidateService:        &ServiceValidator{Client: c, ControllerUsername: opts.ControllerUsername},
		PathValidateCanary:         &CanaryValidator{},
		PathValidateMetricTemplate: &MetricTemplateValidator{},
	}
}
