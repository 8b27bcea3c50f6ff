package ctl

import (
	"fmt"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// connection is how a command reaches the cluster: client-go's kubeconfig loading, as
// kubectl does it (--kubeconfig, else $KUBECONFIG, else ~/.kube/config, else in-cluster),
// with --context, --namespace and impersonation on top.
type connection struct {
	kubeconfig string
	context    string
	namespace  string
	as         string
	asGroups   []string
}

func (c *connection) bindFlags(fs *pflag.FlagSet) {
	fs.StringVarP(&c.namespace, "namespace", "n", "", "namespace of the Canary (default: the kubeconfig context's, else default)")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
	fs.StringVar(&c.context, "context", "", "kubeconfig context to use")
	fs.StringVar(&c.as, "as", "", "user to impersonate for the request")
	fs.StringArrayVar(&c.asGroups, "as-group", nil, "group to impersonate (repeatable)")
}

var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	utilruntime.Must(corev1.AddToScheme(s))
	// migrate's: the Deployments, HPAs and EndpointSlices Flagger leaves.
	utilruntime.Must(appsv1.AddToScheme(s))
	utilruntime.Must(autoscalingv2.AddToScheme(s))
	utilruntime.Must(discoveryv1.AddToScheme(s))
	utilruntime.Must(v1beta1.AddToScheme(s))
	return s
}()

// client returns a client of the cluster and the namespace to work in.
func (c *connection) client(io IO) (client.WithWatch, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.kubeconfig
	overrides := &clientcmd.ConfigOverrides{CurrentContext: c.context}
	overrides.Context.Namespace = c.namespace
	overrides.AuthInfo.Impersonate = c.as
	overrides.AuthInfo.ImpersonateGroups = c.asGroups
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, overrides)
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("load kubeconfig: %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("namespace from kubeconfig: %w", err)
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = programName + "-ctl"
	// Admission warnings (e.g. a command-by the webhook replaced) reach the user.
	cfg.WarningHandlerWithContext = nil
	cfg.WarningHandler = rest.NewWarningWriter(io.Err, rest.WarningWriterOptions{Deduplicate: true, Color: io.Color})
	cl, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, "", fmt.Errorf("create client for %s: %w", cfg.Host, err)
	}
	return cl, ns, nil
}
