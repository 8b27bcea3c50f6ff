package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/clock"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	crwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/canarywatch"
	"github.com/coalmine-dev/coalmine/certs"
	"github.com/coalmine-dev/coalmine/rollout"
	"github.com/coalmine-dev/coalmine/rollout/alerts"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
	"github.com/coalmine-dev/coalmine/rollout/router"
	"github.com/coalmine-dev/coalmine/webhook"
	"github.com/coalmine-dev/coalmine/webview"
)

// Names of coalmine's own objects, shared with the shipped manifests.
const (
	WebhookConfigurationName = "coalmine"
	WebhookServiceName       = "coalmine-webhook"
	TLSSecretName            = "coalmine-webhook-tls"
)

// NewScheme knows every type coalmine reads or writes.
func NewScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(s))
	utilruntime.Must(v1beta1.AddToScheme(s))
	utilruntime.Must(router.AddToScheme(s))
	return s
}

// Run starts coalmine and blocks until ctx is done. Options must be valid.
func Run(ctx context.Context, o Options) error {
	logger := log.FromContext(ctx).WithName("coalmine")
	ctx = log.IntoContext(ctx, logger)

	cfg, err := o.restConfig()
	if err != nil {
		return err
	}
	username, err := whoAmI(ctx, cfg)
	if err != nil {
		return err
	}
	logger.Info("starting", "identity", username, "namespace", o.Namespace, "routeKind", o.RouteKind, "certMode", o.CertMode)

	scheme := NewScheme()
	// A direct client for objects coalmine may only get/patch by name (RBAC resourceNames
	// rules cannot list or watch) and for routes, which may live on another cluster.
	direct, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return fmt.Errorf("create direct client: %w", err)
	}

	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		MapperProvider:          newMapper,
		Scheme:                  scheme,
		Metrics:                 metricsserver.Options{BindAddress: o.MetricsBindAddress},
		HealthProbeBindAddress:  o.HealthProbeBindAddress,
		LeaderElection:          o.LeaderElect,
		LeaderElectionID:        o.LeaderElectionID,
		LeaderElectionNamespace: o.Namespace,
		// Every replica serves admission; only the leader runs the loop. Releasing on
		// shutdown lets a rolling restart hand over in seconds, not a lease duration.
		LeaderElectionReleaseOnCancel: true,
		WebhookServer: crwebhook.NewServer(crwebhook.Options{
			Host:    o.WebhookHost,
			Port:    o.WebhookPort,
			CertDir: o.CertDir,
			TLSOpts: []func(*tls.Config){func(c *tls.Config) {
				// HTTP/2 off: CVE-2023-44487 (rapid reset) and CVE-2023-39325.
				c.NextProtos = []string{"http/1.1"}
				c.MinVersion = tls.VersionTLS12
			}},
		}),
		Cache: cache.Options{
			SyncPeriod: &o.SyncPeriod,
			// Nothing coalmine does reads managedFields; they are often the largest part
			// of a cached Deployment, Service or Canary.
			DefaultTransform: cache.TransformStripManagedFields(),
		},
		Client: client.Options{Cache: &client.CacheOptions{
			// Every read comes from the cache. A pass must never act on a Canary or target
			// older than the loop's own last write of it (one that did re-created a
			// rolled-back canary): the loop guards that itself (rollout's writeMemo), so it
			// does not lean on controller-runtime's experimental read-your-writes mode.
			// Secrets are read rarely (metric provider credentials) and caching them would
			// watch every Secret of the cluster.
			DisableFor: []client.Object{
				&corev1.Secret{},
				&admissionregistrationv1.MutatingWebhookConfiguration{},
				&admissionregistrationv1.ValidatingWebhookConfiguration{},
			},
		}},
	})
	if err != nil {
		return fmt.Errorf("create manager: %w", err)
	}

	if err := setupCerts(ctx, mgr, direct, o); err != nil {
		return err
	}
	if err := webhook.Register(mgr, webhook.Options{ControllerUsername: username}); err != nil {
		return fmt.Errorf("register admission webhooks: %w", err)
	}

	meshClient := direct
	remoteRoutes := map[string]bool{}
	if o.MeshKubeconfig != "" || o.MeshRESTConfig != nil {
		remoteRoutes[v1beta1.RouteKindTrafficRoute] = true
		meshCfg := o.MeshRESTConfig
		if meshCfg == nil {
			if meshCfg, err = clientcmd.BuildConfigFromFlags("", o.MeshKubeconfig); err != nil {
				return fmt.Errorf("load --mesh-kubeconfig: %w", err)
			}
		}
		meshCfg = rest.CopyConfig(meshCfg)
		meshCfg.QPS, meshCfg.Burst = float32(o.KubeAPIQPS), o.KubeAPIBurst
		if meshClient, err = client.New(meshCfg, client.Options{Scheme: scheme}); err != nil {
			return fmt.Errorf("create mesh control-plane client: %w", err)
		}
	}

	rec := &rollout.Reconciler{
		Client:    mgr.GetClient(),
		APIReader: mgr.GetAPIReader(),
		Recorder:  mgr.GetEventRecorder("coalmine"),
		Clock:     clock.RealClock{},
		Analyzer: analysis.New(mgr.GetClient(), analysis.ProviderConfig{
			Address:         o.MetricsServer,
			CAFile:          o.MetricsServerCAFile,
			BearerTokenFile: o.MetricsServerTokenFile,
			Zone:            o.Zone,
		}),
		Routers: map[string]router.Router{
			v1beta1.RouteKindTrafficRoute:  router.NewTrafficRouteRouter(meshClient),
			v1beta1.RouteKindMeshHTTPRoute: router.NewMeshHTTPRouteRouter(direct),
		},
		DefaultRouteKind: o.RouteKind,
		RemoteRouteKinds: remoteRoutes,
		Alerts: &alerts.Notifier{
			Client: mgr.GetClient(), Global: o.GlobalAlertProvider(),
			ClusterName: o.ClusterName, EventWebhook: o.EventWebhook,
		},
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up progression loop: %w", err)
	}
	// The Canaries' history (web view) and the metrics the dashboard and alerts derive
	// from their status; the web view itself only when asked for.
	watch := canarywatch.New(mgr.GetCache(), canarywatch.Options{Elected: mgr.Elected()})
	if err := mgr.Add(watch); err != nil {
		return fmt.Errorf("add Canary watcher: %w", err)
	}
	if o.WebAddress != "" {
		if err := mgr.Add(webview.New(o.WebAddress, mgr.GetCache(), watch)); err != nil {
			return fmt.Errorf("add web view: %w", err)
		}
	}
	optIn := &rollout.OptInReconciler{Client: mgr.GetClient(), Recorder: mgr.GetEventRecorder("coalmine")}
	if err := optIn.SetupWithManager(mgr); err != nil {
		return fmt.Errorf("set up annotation opt-in: %w", err)
	}

	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return fmt.Errorf("add healthz check: %w", err)
	}
	if err := mgr.AddReadyzCheck("webhook", mgr.GetWebhookServer().StartedChecker()); err != nil {
		return fmt.Errorf("add readyz check: %w", err)
	}
	if err := mgr.Start(ctx); err != nil {
		return fmt.Errorf("run manager: %w", err)
	}
	return nil
}

func setupCerts(ctx context.Context, mgr ctrl.Manager, direct client.Client, o Options) error {
	if o.CertMode == CertModeCertManager {
		// cert-manager writes the files and injects the CA; the webhook server's
		// certwatcher picks up renewals on its own.
		return nil
	}
	ips := make([]net.IP, 0, len(o.CertIPs))
	for _, s := range o.CertIPs {
		ip := net.ParseIP(s)
		if ip == nil {
			return fmt.Errorf("parse certificate IP %q: not an IP address", s)
		}
		ips = append(ips, ip)
	}
	cm := certs.New(direct, certs.Options{
		Namespace:             o.Namespace,
		SecretName:            TLSSecretName,
		ServiceName:           WebhookServiceName,
		CertDir:               o.CertDir,
		DNSNames:              o.CertDNSNames,
		IPAddresses:           ips,
		WebhookConfigurations: []string{WebhookConfigurationName},
	})
	// The webhook server reads the files when it starts, so they must exist first.
	// A failed CA injection is not fatal: the files exist, so the server can start, and
	// the manager keeps retrying while readiness stays false.
	if err := cm.Ensure(ctx); err != nil && !errors.Is(err, certs.ErrNotInjected) {
		return fmt.Errorf("ensure serving certificate: %w", err)
	}
	if err := mgr.Add(cm); err != nil {
		return fmt.Errorf("add certificate manager: %w", err)
	}
	if err := mgr.AddReadyzCheck("certificate", cm.ReadyCheck); err != nil {
		return fmt.Errorf("add certificate readyz check: %w", err)
	}
	return nil
}

func (o Options) restConfig() (*rest.Config, error) {
	var cfg *rest.Config
	var err error
	switch {
	case o.RESTConfig != nil:
		cfg = rest.CopyConfig(o.RESTConfig)
	case o.Kubeconfig != "":
		if cfg, err = clientcmd.BuildConfigFromFlags("", o.Kubeconfig); err != nil {
			return nil, fmt.Errorf("load --kubeconfig: %w", err)
		}
	default:
		if cfg, err = ctrl.GetConfig(); err != nil {
			return nil, fmt.Errorf("load cluster config: %w", err)
		}
	}
	cfg.QPS, cfg.Burst = float32(o.KubeAPIQPS), o.KubeAPIBurst
	return cfg, nil
}

// whoAmI learns coalmine's own username from the apiserver, so the webhook recognises its
// requests by authenticated identity, never by anything a user could write into an object.
func whoAmI(ctx context.Context, cfg *rest.Config) (string, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return "", fmt.Errorf("create clientset: %w", err)
	}
	r, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("learn own identity with a SelfSubjectReview: %w", err)
	}
	return r.Status.UserInfo.Username, nil
}
