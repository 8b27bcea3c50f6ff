// Package app assembles coalmine from its options: the manager, the admission webhooks,
// the certificate manager and the progression loop. main only parses flags into Options.
package app

import (
	"errors"
	"flag"
	"fmt"
	"net/url"
	"os"
	"time"

	"k8s.io/client-go/rest"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/alerts"
)

// Certificate modes of --cert-mode.
const (
	CertModeSelfManaged = "self-managed"
	CertModeCertManager = "cert-manager"
)

// Options is everything coalmine needs to start. Validate it before Run.
type Options struct {
	// Kubeconfig of the local cluster; empty means in-cluster or $KUBECONFIG.
	Kubeconfig string
	// RESTConfig, when set, wins over Kubeconfig (tests and the demo run coalmine in process
	// with an impersonated ServiceAccount config).
	RESTConfig *rest.Config

	MetricsBindAddress     string
	HealthProbeBindAddress string
	LeaderElect            bool
	// LeaderElectionID names the Lease; two coalmines in one cluster need different ones.
	LeaderElectionID string

	// WebAddress serves the read-only web view (webview) when set; empty = off.
	WebAddress string

	WebhookPort int
	// WebhookHost is the address the webhook server binds; empty = all interfaces.
	WebhookHost string
	CertDir     string
	CertMode    string
	// CertDNSNames and CertIPs are extra names of the self-managed serving certificate
	// (the sandbox calls the webhook on 127.0.0.1).
	CertDNSNames []string
	CertIPs      []string
	// Namespace coalmine runs in: its TLS Secret and leader-election Lease live there.
	Namespace string

	MetricsServer          string
	MetricsServerCAFile    string
	MetricsServerTokenFile string

	// MeshKubeconfig points at the mesh control-plane cluster (multi-zone: the Global CP)
	// where TrafficRoutes are written. Empty = the local cluster.
	MeshKubeconfig string
	// MeshRESTConfig wins over MeshKubeconfig (tests).
	MeshRESTConfig *rest.Config
	RouteKind      string

	KubeAPIQPS   float64
	KubeAPIBurst int

	// SyncPeriod bounds how stale the cache may get; the analysis interval drives requeues.
	SyncPeriod time.Duration

	// Alerting, as Flagger's command line: the global provider receives the alerts of
	// Canaries without spec.analysis.alerts (MS Teams when its URL is set, else Slack),
	// EventWebhook every Event of Canaries without an event webhook. Each defaults to
	// Flagger's environment variable (SLACK_URL, MSTEAMS_URL, EVENT_WEBHOOK_URL, ...), so
	// the URLs can come from a Secret.
	SlackURL        string
	SlackToken      string
	SlackProxyURL   string
	SlackUser       string
	SlackChannel    string
	MSTeamsURL      string
	MSTeamsProxyURL string
	EventWebhook    string
	// Zone is the zone label value the builtin queries match (multi-zone, one main
	// Prometheus fed by each zone's); empty matches any.
	Zone string
	// ClusterName is the first field of every alert, when set.
	ClusterName string
}

// BindFlags registers the command-line flags of o on fs, with their defaults.
func (o *Options) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "Path to a kubeconfig of the local cluster; empty uses in-cluster config or $KUBECONFIG.")
	fs.StringVar(&o.MetricsBindAddress, "metrics-bind-address", ":8080", "Address of the /metrics endpoint; 0 disables it.")
	fs.StringVar(&o.HealthProbeBindAddress, "health-probe-bind-address", ":8081", "Address of /healthz and /readyz.")
	fs.StringVar(&o.WebAddress, "web-address", "", "Address of the read-only web view (Canaries and their live timeline), e.g. 127.0.0.1:9898 for kubectl port-forward; empty = off.")
	fs.BoolVar(&o.LeaderElect, "leader-elect", false, "Elect a leader so only one replica runs the progression loop (every replica serves admission).")
	fs.StringVar(&o.LeaderElectionID, "leader-election-id", "coalmine.coalmine.dev", "Name of the leader-election Lease.")
	fs.IntVar(&o.WebhookPort, "webhook-port", 9443, "Port of the HTTPS admission server.")
	fs.StringVar(&o.WebhookHost, "webhook-host", "", "Address the admission server binds; empty = all interfaces.")
	fs.StringVar(&o.CertDir, "cert-dir", "/tmp/coalmine/serving-certs", "Directory of tls.crt and tls.key, watched for changes.")
	fs.StringVar(&o.CertMode, "cert-mode", CertModeSelfManaged, "self-managed: coalmine keeps its own CA and injects it; cert-manager: only watch the files cert-manager writes.")
	fs.StringVar(&o.Namespace, "namespace", os.Getenv("POD_NAMESPACE"), "Namespace coalmine runs in (TLS Secret, Lease); defaults to $POD_NAMESPACE.")
	fs.StringVar(&o.MetricsServer, "metrics-server", "http://prometheus.monitoring:9090", "Prometheus address for the builtin metrics and templates without provider.address.")
	fs.StringVar(&o.MetricsServerCAFile, "metrics-server-ca-file", "", "PEM CA bundle for a metrics server with a private CA.")
	fs.StringVar(&o.MetricsServerTokenFile, "metrics-server-token-file", "", "File holding a bearer token for the metrics server (re-read when it changes).")
	fs.StringVar(&o.MeshKubeconfig, "mesh-kubeconfig", "", "Kubeconfig of the mesh control-plane cluster where TrafficRoutes are written (multi-zone: the Global CP); empty = local cluster.")
	fs.StringVar(&o.RouteKind, "route-kind", v1beta1.RouteKindTrafficRoute, "Default route kind: TrafficRoute or MeshHTTPRoute (Canary annotation coalmine.dev/route-kind overrides).")
	fs.Float64Var(&o.KubeAPIQPS, "kube-api-qps", 200, "Client QPS towards the apiserver; raised from client-go's 5 so hundreds of canaries never throttle.")
	fs.IntVar(&o.KubeAPIBurst, "kube-api-burst", 400, "Client burst towards the apiserver.")
	fs.DurationVar(&o.SyncPeriod, "sync-period", 10*time.Hour, "Full resync period of the informer cache.")
	fs.StringVar(&o.SlackURL, "slack-url", os.Getenv("SLACK_URL"), "Slack incoming-webhook URL of the global alert provider (Canaries without spec.analysis.alerts); defaults to $SLACK_URL.")
	fs.StringVar(&o.SlackToken, "slack-token", os.Getenv("SLACK_TOKEN"), "Slack bot token sent as a bearer token; defaults to $SLACK_TOKEN.")
	fs.StringVar(&o.SlackProxyURL, "slack-proxy-url", os.Getenv("SLACK_PROXY_URL"), "HTTP(S) proxy for Slack; defaults to $SLACK_PROXY_URL.")
	fs.StringVar(&o.SlackUser, "slack-user", alerts.DefaultUsername, "Slack user name of the global alert provider.")
	fs.StringVar(&o.SlackChannel, "slack-channel", "", "Slack channel of the global alert provider; empty = "+alerts.DefaultChannel+".")
	fs.StringVar(&o.MSTeamsURL, "msteams-url", os.Getenv("MSTEAMS_URL"), "MS Teams incoming-webhook URL of the global alert provider (wins over --slack-url); defaults to $MSTEAMS_URL.")
	fs.StringVar(&o.MSTeamsProxyURL, "msteams-proxy-url", os.Getenv("MSTEAMS_PROXY_URL"), "HTTP(S) proxy for MS Teams; defaults to $MSTEAMS_PROXY_URL.")
	fs.StringVar(&o.EventWebhook, "event-webhook", os.Getenv("EVENT_WEBHOOK_URL"), "URL receiving every Canary Event as an event webhook (Canaries without one of their own); defaults to $EVENT_WEBHOOK_URL.")
	fs.StringVar(&o.Zone, "zone", "", "Zone label value the builtin metrics match, when zone Prometheus servers remote-write to one main Prometheus (e.g. the Kuma zone name).")
	fs.StringVar(&o.ClusterName, "cluster-name", "", "Cluster name added to every alert.")
}

// GlobalAlertProvider is the provider of --msteams-url, else of --slack-url; nil without
// either.
func (o *Options) GlobalAlertProvider() *alerts.Provider {
	switch {
	case o.MSTeamsURL != "":
		return &alerts.Provider{Type: v1beta1.AlertProviderMSTeams, Address: o.MSTeamsURL, Proxy: o.MSTeamsProxyURL}
	case o.SlackURL != "":
		return &alerts.Provider{Type: v1beta1.AlertProviderSlack, Address: o.SlackURL, Token: o.SlackToken,
			Proxy: o.SlackProxyURL, Username: o.SlackUser, Channel: o.SlackChannel}
	}
	return nil
}

// Validate reports every invalid option at once, naming the flag and the fix.
func (o *Options) Validate() error {
	var errs []error
	if o.Namespace == "" {
		errs = append(errs, errors.New("--namespace is empty: set it or $POD_NAMESPACE to the namespace coalmine runs in"))
	}
	if o.WebhookPort < 1 || o.WebhookPort > 65535 {
		errs = append(errs, fmt.Errorf("--webhook-port %d is out of range: use 1-65535", o.WebhookPort))
	}
	if o.CertDir == "" {
		errs = append(errs, errors.New("--cert-dir is empty: give a writable directory for the serving certificate"))
	}
	switch o.CertMode {
	case CertModeSelfManaged, CertModeCertManager:
	default:
		errs = append(errs, fmt.Errorf("--cert-mode %q is unknown: use %s or %s", o.CertMode, CertModeSelfManaged, CertModeCertManager))
	}
	switch o.RouteKind {
	case v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute:
	default:
		errs = append(errs, fmt.Errorf("--route-kind %q is unknown: use %s or %s", o.RouteKind, v1beta1.RouteKindTrafficRoute, v1beta1.RouteKindMeshHTTPRoute))
	}
	if o.MetricsServer == "" {
		errs = append(errs, errors.New("--metrics-server is empty: give the Prometheus address, e.g. http://prometheus.monitoring:9090"))
	}
	for flagName, path := range map[string]string{
		"--mesh-kubeconfig":           o.MeshKubeconfig,
		"--metrics-server-ca-file":    o.MetricsServerCAFile,
		"--metrics-server-token-file": o.MetricsServerTokenFile,
		"--kubeconfig":                o.Kubeconfig,
	} {
		if path == "" {
			continue
		}
		if _, err := os.Stat(path); err != nil {
			errs = append(errs, fmt.Errorf("%s %q cannot be read: %w", flagName, path, err))
		}
	}
	for flagName, u := range map[string]string{
		"--slack-url":         o.SlackURL,
		"--slack-proxy-url":   o.SlackProxyURL,
		"--msteams-url":       o.MSTeamsURL,
		"--msteams-proxy-url": o.MSTeamsProxyURL,
		"--event-webhook":     o.EventWebhook,
	} {
		if u == "" {
			continue
		}
		// The value may be a credential (webhook URLs are): never echo it.
		if p, err := url.Parse(u); err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			errs = append(errs, fmt.Errorf("%s is not an http(s) URL: give e.g. https://hooks.example.com/...", flagName))
		}
	}
	if o.KubeAPIQPS <= 0 || o.KubeAPIBurst <= 0 {
		errs = append(errs, fmt.Errorf("--kube-api-qps (%v) and --kube-api-burst (%d) must be positive", o.KubeAPIQPS, o.KubeAPIBurst))
	}
	return errors.Join(errs...)
}
