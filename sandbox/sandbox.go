package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Options configure Start. The zero value starts a full single-zone sandbox in a
// temporary directory.
type Options struct {
	// Dir holds the state and the log of every process (<process>.log). Empty: a new
	// temporary directory, removed by Stop.
	Dir string
	// Log receives progress (what is built, started, how long it took). Nil: discarded.
	Log io.Writer
	// ControlPlaneOnly runs etcd and the apiserver alone, with CRDs: no
	// controller-manager, scheduler, kwok or Prometheus (unless Prometheus says so).
	// A second sandbox with it plays Kuma's Global Control Plane in multi-zone tests.
	ControlPlaneOnly bool
	// CRDDirs are more CRD directories or files to install, e.g. manifests/crd.
	CRDDirs []string
	// Prometheus runs the two Prometheus tiers: a zone one scraping (AddScrapeTarget) and
	// remote-writing to a main one (PrometheusURL). Nil: on, unless ControlPlaneOnly.
	Prometheus *bool
	// Binaries to run. Nil: Build them (or reuse the cache), reporting on Log.
	Binaries *Binaries
	// APIServerFlags are extra kube-apiserver flags (name without "--" -> value).
	APIServerFlags map[string]string
}

// Sandbox is a running cluster. Stop it when done.
type Sandbox struct {
	// Config is the admin's (system:masters). Coalmine must not run with it: use
	// Impersonate.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file of the admin, for kubectl and child processes.
	KubeconfigPath string
	// PrometheusURL is the main Prometheus' base URL, e.g. http://127.0.0.1:40123: what
	// coalmine's --metrics-server points at. It only receives remote writes from the zone
	// Prometheus servers (Zone); empty without Prometheus.
	PrometheusURL string
	// Dir holds the state and logs of every process.
	Dir string
	// Kubectl is the path of the kubectl binary matching the apiserver.
	Kubectl string
	// Binaries are the programs this sandbox runs.
	Binaries *Binaries

	opts      Options
	log       io.Writer
	removeDir bool
	env       *envtest.Environment
	logFiles  []*os.File
	children  []*process // controller-manager, scheduler, kwok, in start order
	client    client.Client

	// promMu guards the Prometheus tiers (prometheus_tiers.go): main, the sandbox's own
	// zone, and every zone including it.
	promMu   sync.Mutex
	promMain *promServer
	zone     *ZonePrometheus
	zones    []*ZonePrometheus

	stopOnce sync.Once
	stopErr  error
}

// Start starts a sandbox. On error nothing is left running.
func Start(ctx context.Context, opts Options) (_ *Sandbox, err error) {
	s := &Sandbox{opts: opts, log: opts.Log}
	if s.log == nil {
		s.log = io.Discard
	}
	if err := s.makeDir(); err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			if stopErr := s.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()

	bins := opts.Binaries
	if bins == nil {
		if bins, err = Build(ctx, s.log); err != nil {
			return nil, err
		}
	}
	s.Binaries, s.Kubectl = bins, bins.Kubectl

	start := time.Now()
	if err := s.startControlPlane(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(s.log, "sandbox: control plane up in %s at %s\n", time.Since(start).Round(10*time.Millisecond), s.Config.Host)

	if !opts.ControlPlaneOnly {
		t := time.Now()
		if err := s.startNodes(ctx); err != nil {
			return nil, err
		}
		fmt.Fprintf(s.log, "sandbox: controller-manager, scheduler and kwok node up in %s\n", time.Since(t).Round(10*time.Millisecond))
	}
	if opts.Prometheus == nil && !opts.ControlPlaneOnly || opts.Prometheus != nil && *opts.Prometheus {
		if err := s.StartPrometheus(ctx); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(s.log, "sandbox: ready in %s (state and logs in %s)\n", time.Since(start).Round(10*time.Millisecond), s.Dir)
	return s, nil
}

func (s *Sandbox) makeDir() error {
	dir := s.opts.Dir
	if dir == "" {
		d, err := os.MkdirTemp("", "coalmine-sandbox-")
		if err != nil {
			return fmt.Errorf("create sandbox directory: %w", err)
		}
		dir, s.removeDir = d, true
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("create sandbox directory: %w", err)
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return fmt.Errorf("create sandbox directory: %w", err)
	}
	s.Dir = abs
	return nil
}

// startControlPlane starts etcd and the apiserver through envtest and installs the CRDs.
func (s *Sandbox) startControlPlane(ctx context.Context) error {
	binDir := filepath.Join(s.Dir, "bin")
	if err := os.MkdirAll(binDir, 0o755); err != nil {
		return fmt.Errorf("create bin directory: %w", err)
	}
	for name, bin := range map[string]string{"kube-apiserver": s.Binaries.KubeAPIServer, "etcd": s.Binaries.Etcd} {
		if err := linkBinary(binDir, name, bin); err != nil {
			return err
		}
	}

	kumaCRDs, err := KumaCRDDir(ctx)
	if err != nil {
		return err
	}
	mhr, err := meshHTTPRouteCRD()
	if err != nil {
		return err
	}
	etcdDir := filepath.Join(s.Dir, "etcd")
	if err := os.MkdirAll(etcdDir, 0o700); err != nil {
		return fmt.Errorf("create etcd directory: %w", err)
	}
	apiserverLog, err := s.openLog("kube-apiserver")
	if err != nil {
		return err
	}
	etcdLog, err := s.openLog("etcd")
	if err != nil {
		return err
	}

	s.env = &envtest.Environment{
		BinaryAssetsDirectory: binDir,
		ControlPlane: envtest.ControlPlane{
			// The apiserver's certificates go to a directory envtest makes and removes:
			// envtest retries a failed start and does not regenerate certificates it
			// finds, so a fixed directory would break its retry.
			APIServer:   &envtest.APIServer{Out: apiserverLog, Err: apiserverLog},
			Etcd:        &envtest.Etcd{DataDir: etcdDir, Out: etcdLog, Err: etcdLog},
			KubectlPath: s.Binaries.Kubectl,
		},
		CRDDirectoryPaths:        append([]string{kumaCRDs}, s.opts.CRDDirs...),
		CRDs:                     []*apiextensionsv1.CustomResourceDefinition{mhr},
		ErrorIfCRDPathMissing:    true,
		ControlPlaneStartTimeout: time.Minute,
		// The apiserver drains for a while on SIGTERM; beyond this envtest kills it.
		ControlPlaneStopTimeout: 30 * time.Second,
	}
	args := s.env.ControlPlane.GetAPIServer().Configure()
	// No Endpoints reconciliation for the kubernetes Service: it would advertise an
	// address clients outside this machine cannot reach and fight a second sandbox.
	args.Set("advertise-address", "127.0.0.1")
	args.Set("endpoint-reconciler-type", "none")
	// envtest defaults to RBAC alone; say so, since coalmine's least-privilege RBAC is
	// part of what the sandbox tests.
	args.Set("authorization-mode", "RBAC")
	for k, v := range s.opts.APIServerFlags {
		args.Set(k, v)
	}
	if _, err := s.env.Start(); err != nil {
		return fmt.Errorf("start control plane (logs in %s): %w", s.Dir, err)
	}
	s.Config = rest.CopyConfig(s.env.Config)
	// Keep the same client limits as envtest: tests and bench want a fast apiserver.
	s.Config.QPS, s.Config.Burst = 1000, 2000

	scheme := runtime.NewScheme()
	_ = clientgoscheme.AddToScheme(scheme)
	_ = apiextensionsv1.AddToScheme(scheme)
	if s.client, err = client.New(s.Config, client.Options{Scheme: scheme}); err != nil {
		return fmt.Errorf("create admin client: %w", err)
	}
	if err := s.writeKubeconfig(); err != nil {
		return err
	}
	if err := s.checkRBAC(ctx); err != nil {
		return err
	}
	if err := waitCRDsEstablished(ctx, s.client, mhr.Name); err != nil {
		return err
	}
	return installTrafficRoutePolicy(ctx, s.client)
}

// linkBinary puts bin into binDir under name, wrapped to die with this process when the
// platform allows (envtest starts these, not the sandbox).
func linkBinary(binDir, name, bin string) error {
	dst := filepath.Join(binDir, name)
	_ = os.Remove(dst)
	if script := deathSigWrapper(bin); script != "" {
		if err := os.WriteFile(dst, []byte(script), 0o755); err != nil {
			return fmt.Errorf("write %s wrapper: %w", name, err)
		}
		return nil
	}
	if err := os.Symlink(bin, dst); err != nil {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

func (s *Sandbox) openLog(name string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(s.Dir, name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	s.logFiles = append(s.logFiles, f)
	return f, nil
}

// writeKubeconfig writes the admin's kubeconfig to <Dir>/kubeconfig, context
// "coalmine-sandbox", and the apiserver's CA to <Dir>/ca.crt.
func (s *Sandbox) writeKubeconfig() error {
	s.KubeconfigPath = filepath.Join(s.Dir, "kubeconfig")
	if err := s.writeKubeconfigFile(s.KubeconfigPath, "", nil); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(s.Dir, "ca.crt"), s.Config.CAData, 0o644)
}

// KubeconfigFor writes a kubeconfig acting as user in groups (the admin's
// certificate with impersonation, as Impersonate) to <Dir>/kubeconfig-<user> and
// returns its path: for a process that takes a kubeconfig file, e.g. coalmine's
// --mesh-kubeconfig pointing at a second sandbox.
func (s *Sandbox) KubeconfigFor(user string, groups ...string) (string, error) {
	safe := strings.Map(func(r rune) rune {
		if r == '/' || r == ':' || r == os.PathSeparator {
			return '_'
		}
		return r
	}, user)
	path := filepath.Join(s.Dir, "kubeconfig-"+safe)
	return path, s.writeKubeconfigFile(path, user, groups)
}

func (s *Sandbox) writeKubeconfigFile(path, user string, groups []string) error {
	const name = "coalmine-sandbox"
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters[name] = &clientcmdapi.Cluster{Server: s.Config.Host, CertificateAuthorityData: s.Config.CAData}
	cfg.AuthInfos[name] = &clientcmdapi.AuthInfo{
		ClientCertificateData: s.Config.CertData, ClientKeyData: s.Config.KeyData,
		Impersonate: user, ImpersonateGroups: groups,
	}
	cfg.Contexts[name] = &clientcmdapi.Context{Cluster: name, AuthInfo: name}
	cfg.CurrentContext = name
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// checkRBAC makes sure authorization is enforced: a service account nobody granted
// anything must not read Secrets. Coalmine's webhook trusts the identity of its own
// requests, so an apiserver that allowed everything would make the tests meaningless.
func (s *Sandbox) checkRBAC(ctx context.Context) error {
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User:   "system:serviceaccount:default:sandbox-rbac-probe",
		Groups: []string{"system:serviceaccounts", "system:authenticated"},
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: "default", Verb: "list", Resource: "secrets",
		},
	}}
	if err := s.client.Create(ctx, review); err != nil {
		return fmt.Errorf("check RBAC: %w", err)
	}
	if review.Status.Allowed {
		return errors.New("check RBAC: an unprivileged service account may list secrets; authorization is not enforced")
	}
	return nil
}

// Impersonate returns a copy of the admin config acting as user in groups. For a
// ServiceAccount pass "system:serviceaccount:<ns>:<name>" and its groups
// ("system:serviceaccounts", "system:serviceaccounts:<ns>", "system:authenticated"):
// RBAC then judges every request as that identity.
func (s *Sandbox) Impersonate(user string, groups ...string) *rest.Config {
	cfg := rest.CopyConfig(s.Config)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: groups}
	return cfg
}

// ServiceAccountUser returns the user name and groups of a ServiceAccount, as
// Impersonate wants them.
func ServiceAccountUser(namespace, name string) (string, []string) {
	return "system:serviceaccount:" + namespace + ":" + name,
		[]string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
}

// Stop stops everything, in an order that lets each part exit at once: kwok, the
// scheduler and the controller-manager, the zone Prometheus servers, main, then the
// apiserver before etcd (the other way round the apiserver hangs for half a minute). It
// is safe to call more than once.
func (s *Sandbox) Stop() error {
	s.stopOnce.Do(func() {
		start := time.Now()
		var errs []error
		for i := len(s.children) - 1; i >= 0; i-- {
			if err := s.children[i].stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if err := s.stopPrometheusTiers(); err != nil {
			errs = append(errs, err)
		}
		if s.env != nil {
			if err := s.env.Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stop control plane: %w", err))
			}
		}
		for _, f := range s.logFiles {
			_ = f.Close()
		}
		if s.removeDir && s.Dir != "" {
			if err := os.RemoveAll(s.Dir); err != nil {
				errs = append(errs, fmt.Errorf("remove sandbox directory: %w", err))
			}
		}
		s.stopErr = errors.Join(errs...)
		fmt.Fprintf(s.log, "sandbox: stopped in %s\n", time.Since(start).Round(10*time.Millisecond))
	})
	return s.stopErr
}

// Poll calls cond every interval until ctx is done, cond returns no error and true, or
// timeout passes; the error then says what cond last reported. The e2e tests wait with it
// too.
func Poll(ctx context.Context, timeout, interval time.Duration, cond func(context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		ok, err := cond(ctx)
		if err == nil && ok {
			return nil
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last == nil {
				last = errors.New("condition not met")
			}
			return fmt.Errorf("%w (after %s)", last, timeout)
		case <-time.After(interval):
		}
	}
}

// freePort asks the kernel for a free loopback port. Another process may take it
// before ours binds it; the window is small, as with envtest's own ports.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
