package sandbox

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Kuma's control planes for real (DESIGN §7, "Real parts that build here"): kuma-cp
// v1.8.1 in Kubernetes mode as the Global CP, on a control-plane-only sandbox of its own,
// and as a zone CP on the zone sandbox, connected over KDS, each behind Kuma's own
// validating webhook. kuma-cp runs out of cluster; what it expects of its pod is provided
// around it:
//   - KUBECONFIG impersonating kuma-system:kuma-control-plane, with the RBAC of Kuma's
//     chart (testdata/kuma-cp-rbac.yaml): Kuma's webhook knows KDS writes by that user;
//   - KUBERNETES_SERVICE_HOST/PORT, which it reads at start (data planes bypass them);
//   - POD_NAME and a Pod object of that name: its leader election is a ConfigMap owned
//     by its Pod;
//   - the in-cluster namespace file, which that leader election (operator-lib) reads from
//     a fixed path: a private mount namespace provides it, which needs root
//     (kumacp_linux.go);
//   - TLS and webhook certificates generated here, and a url-based copy of the validating
//     webhook configuration of Kuma's chart.
//
// Without root, or off Linux, StartKumaMultiZone falls back to the emulation that came
// before, and says so: the Global is a control-plane-only sandbox with Kuma's CRDs and an
// admission policy standing in for Kuma's validator (kuma.go); the zone has no control
// plane and no KDS.

const (
	kumaSystemNamespace = "kuma-system"
	kumaServiceAccount  = "kuma-control-plane"
	kumaWebhookName     = "kuma-validating-webhook-configuration"
	kumaValidatorName   = "validator.kuma-admission.kuma.io"
	// KumaZoneRefusal is what Kuma's zone webhook answers to a write of a resource that
	// belongs to the Global CP, such as a TrafficRoute.
	KumaZoneRefusal = "can be updated or deleted only from the GLOBAL control plane"
	// kumaStartTimeout bounds each control plane's start: process up, webhook answering.
	kumaStartTimeout = 2 * time.Minute
	// KumaManager is the field manager of kuma-cp's writes (its binary's name, through
	// client-go's user agent): what it synced to the zone is told by it.
	KumaManager = "kuma-cp"
	// KumaEmulateEnv set to 1 makes StartKumaMultiZone run the emulation.
	KumaEmulateEnv = "COALMINE_SANDBOX_KUMA_EMULATE"
)

// kumaNamespaceFile is where kuma-cp v1.8.1's leader election (operator-lib's
// leader.Become) reads its namespace, as in a pod; it has no other way to be told.
const kumaNamespaceFile = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"

//go:embed testdata/kuma-cp-rbac.yaml
var kumaRBAC []byte

// KumaOptions configure StartKumaMultiZone.
type KumaOptions struct {
	// Dir is the Global CP's sandbox directory. Empty: <zone's Dir>/global-cp.
	Dir string
	// Log receives progress. Nil: the zone sandbox's.
	Log io.Writer
	// ZoneName is the zone CP's name (its Zone in the Global CP). Empty: "zone-1".
	ZoneName string
	// Meshes are created on the Global CP, as a platform team would, and awaited on the
	// zone (with Kuma's "default"): a KDS sync seen before StartKumaMultiZone returns.
	Meshes []string
	// Emulate runs the emulation even where kuma-cp could run; so does the environment
	// variable KumaEmulateEnv set to 1 (to run the old path as root).
	Emulate bool
}

// KumaMultiZone is a Global CP and, when Real, a zone CP on the zone sandbox. Stop it
// when done: it leaves the zone sandbox as it found it.
type KumaMultiZone struct {
	// Global is the Global CP's cluster, where routes are written (coalmine's
	// --mesh-kubeconfig). Its StopAPIServer/StartAPIServer cut it as before.
	Global *Sandbox
	// Real is true when kuma-cp runs as Global and zone CP, false for the emulation.
	Real bool
	// Why says why the emulation runs; empty when Real.
	Why string
	// ZoneName is the zone CP's name.
	ZoneName string
	// GlobalCP and ZoneCP are the control planes; nil unless Real.
	GlobalCP, ZoneCP *KumaCP
	// KDSSync is how long after the zone CP's webhook answered every mesh of the Global
	// CP was on the zone: the zone connected over KDS and synced.
	KDSSync time.Duration

	zone *Sandbox
	// zoneTouched is set once the zone sandbox is prepared for its CP: from then on Stop
	// cleans it up, even when the zone CP never came up.
	zoneTouched bool
	log         io.Writer
	stopOnce    sync.Once
	stopErr     error
}

// KumaCP is one running kuma-cp.
type KumaCP struct {
	// Mode is "global" or "zone".
	Mode string
	// Ready is how long it took from exec until its webhook answered.
	Ready time.Duration
	// LogPath is its log.
	LogPath string

	// Restarts counts the times kuma-cp crashed and was started again (supervise).
	Restarts int

	sb            *Sandbox
	mu            sync.Mutex
	proc          *process
	stopping      bool
	admissionPort int
	kdsPort       int
}

// StartKumaMultiZone starts a Global CP (a control-plane-only sandbox, kuma-cp in global
// mode on it) and a zone CP (kuma-cp in zone mode on zone) connected to it over KDS, or
// the emulation where kuma-cp cannot run (printing why). On error nothing is left running.
func StartKumaMultiZone(ctx context.Context, zone *Sandbox, opts KumaOptions) (_ *KumaMultiZone, err error) {
	if opts.Dir == "" {
		opts.Dir = filepath.Join(zone.Dir, "global-cp")
	}
	if opts.Log == nil {
		opts.Log = zone.log
	}
	if opts.ZoneName == "" {
		opts.ZoneName = "zone-1"
	}
	m := &KumaMultiZone{ZoneName: opts.ZoneName, zone: zone, log: opts.Log}
	defer func() {
		if err != nil {
			err = errors.Join(err, m.Stop())
		}
	}()
	if m.Global, err = Start(ctx, Options{ControlPlaneOnly: true, Binaries: zone.Binaries, Dir: opts.Dir, Log: opts.Log}); err != nil {
		return nil, fmt.Errorf("start the Global CP's apiserver: %w", err)
	}
	m.Why = kumaCPUnavailable(zone.Binaries)
	if opts.Emulate || os.Getenv(KumaEmulateEnv) == "1" {
		m.Why = "the emulation was asked for (KumaOptions.Emulate or " + KumaEmulateEnv + "=1)"
	}
	if m.Why != "" {
		fmt.Fprintf(m.log, "sandbox: NOTICE: kuma-cp does not run: %s.\n"+
			"sandbox: NOTICE: multi-zone falls back to the emulated Global CP (Kuma's CRDs and an admission policy standing in for Kuma's validator); no zone CP, no KDS.\n", m.Why)
		return m, createMeshes(ctx, m.Global, opts.Meshes)
	}
	m.Real = true
	fmt.Fprintf(m.log, "sandbox: kuma-cp %s runs as the Global and the zone CP (Kubernetes mode). It needs root: it reads the in-cluster namespace file %s, "+
		"which the sandbox provides in a private mount namespace of each kuma-cp (unshare + bind mount); without root multi-zone falls back to the emulation.\n",
		KumaVersion, kumaNamespaceFile)
	tlsDir := filepath.Join(m.Global.Dir, "kuma-tls")
	if err := writeKumaCerts(tlsDir); err != nil {
		return nil, err
	}
	if m.GlobalCP, err = startKumaCP(ctx, m.Global, kumaCPConfig{mode: "global", tlsDir: tlsDir, log: m.log}); err != nil {
		return nil, err
	}
	if err := createMeshes(ctx, m.Global, opts.Meshes); err != nil {
		return nil, err
	}
	m.zoneTouched = true
	m.ZoneCP, err = startKumaCP(ctx, zone, kumaCPConfig{
		mode: "zone", zoneName: opts.ZoneName, globalKDSPort: m.GlobalCP.kdsPort, tlsDir: tlsDir, log: m.log,
	})
	if err != nil {
		return nil, err
	}
	synced := time.Now()
	if err := waitMeshes(ctx, zone, append([]string{"default"}, opts.Meshes...)); err != nil {
		return nil, fmt.Errorf("zone CP %s: KDS sync from the Global CP (logs: %s, %s): %w", opts.ZoneName, m.ZoneCP.LogPath, m.GlobalCP.LogPath, err)
	}
	m.KDSSync = time.Since(synced)
	fmt.Fprintf(m.log, "sandbox: zone CP %s connected to the Global CP over KDS; meshes synced in %s\n", opts.ZoneName, m.KDSSync.Round(10*time.Millisecond))
	return m, nil
}

// Stop stops the zone CP and removes what it added to the zone sandbox (its webhook
// configuration, RBAC, namespace and the resources it synced; the emulated validation
// comes back), then the Global CP and its sandbox. It is safe to call more than once.
func (m *KumaMultiZone) Stop() error {
	m.stopOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		var errs []error
		if m.ZoneCP != nil {
			errs = append(errs, m.ZoneCP.stop())
		}
		if m.zoneTouched {
			errs = append(errs, cleanUpZone(ctx, m.zone))
		}
		if m.GlobalCP != nil {
			errs = append(errs, m.GlobalCP.stop())
		}
		if m.Global != nil {
			errs = append(errs, m.Global.StopRestartedAPIServer(), m.Global.Stop())
		}
		m.stopErr = errors.Join(errs...)
	})
	return m.stopErr
}

// Discard kills both control planes at once and stops the Global CP's sandbox, without
// kuma-cp's drain or the clean-up of the zone: for a caller that stops the zone sandbox
// right after and keeps nothing of it (the demo's exit, bounded to 3 s). Stop and Discard
// each do nothing after either has run.
func (m *KumaMultiZone) Discard() error {
	m.stopOnce.Do(func() {
		var errs []error
		for _, cp := range []*KumaCP{m.ZoneCP, m.GlobalCP} {
			if cp != nil && cp.proc != nil {
				errs = append(errs, cp.kill())
			}
		}
		if m.Global != nil {
			errs = append(errs, m.Global.StopRestartedAPIServer(), m.Global.Stop())
		}
		m.stopErr = errors.Join(errs...)
	})
	return m.stopErr
}

// kumaCPUnavailable says why kuma-cp cannot run here, or "" when it can.
func kumaCPUnavailable(b *Binaries) string {
	if b == nil || b.KumaCP == "" {
		return "the sandbox's binaries include no kuma-cp"
	}
	if !isFile(b.KumaCP) {
		return fmt.Sprintf("the kuma-cp binary %s is absent (make sandbox builds it)", b.KumaCP)
	}
	return kumaCPPlatformUnavailable()
}

// RSS is the control plane's resident memory in bytes.
func (c *KumaCP) RSS() (int64, error) {
	return readRSS(c.current().cmd.Process.Pid)
}

// kumaCPConfig is what differs between the Global and a zone CP.
type kumaCPConfig struct {
	mode          string // "global" or "zone"
	zoneName      string // zone only
	globalKDSPort int    // zone only: where the Global CP serves KDS
	tlsDir        string // ca.crt, tls.crt, tls.key
	log           io.Writer
}

// startKumaCP prepares sb for kuma-cp (namespace, RBAC, Pod), starts it, registers its
// validating webhook and returns once the webhook answers.
func startKumaCP(ctx context.Context, sb *Sandbox, cfg kumaCPConfig) (_ *KumaCP, err error) {
	ctx, cancel := context.WithTimeout(ctx, kumaStartTimeout)
	defer cancel()
	podName := "kuma-control-plane-" + cfg.mode
	if err := prepareKumaCluster(ctx, sb, podName); err != nil {
		return nil, fmt.Errorf("prepare the %s CP's cluster: %w", cfg.mode, err)
	}
	// Kuma's webhook judges TrafficRoutes where kuma-cp runs: the emulation steps aside
	// (the zone gets it back at Stop).
	if err := removeTrafficRoutePolicy(ctx, sb.client); err != nil {
		return nil, err
	}
	ports, err := freePorts(7)
	if err != nil {
		return nil, err
	}
	user, groups := ServiceAccountUser(kumaSystemNamespace, kumaServiceAccount)
	kubeconfig, err := sb.KubeconfigFor(user, groups...)
	if err != nil {
		return nil, err
	}
	apiserver, err := url.Parse(sb.Config.Host)
	if err != nil {
		return nil, fmt.Errorf("parse apiserver address: %w", err)
	}
	workDir := filepath.Join(sb.Dir, "kuma-cp-"+cfg.mode)
	saDir := filepath.Join(workDir, "serviceaccount")
	if err := os.MkdirAll(saDir, 0o755); err != nil {
		return nil, fmt.Errorf("create kuma-cp directory: %w", err)
	}
	if err := os.WriteFile(filepath.Join(saDir, "namespace"), []byte(kumaSystemNamespace), 0o644); err != nil {
		return nil, fmt.Errorf("write kuma-cp's namespace file: %w", err)
	}
	c := &KumaCP{Mode: cfg.mode, sb: sb, admissionPort: ports[0], kdsPort: ports[1]}
	env := append(environWithout("KUBECONFIG"),
		"KUBECONFIG="+kubeconfig,
		"KUBERNETES_SERVICE_HOST="+apiserver.Hostname(),
		"KUBERNETES_SERVICE_PORT="+apiserver.Port(),
		"POD_NAME="+podName,
		"KUMA_MODE="+cfg.mode,
		"KUMA_ENVIRONMENT=kubernetes",
		"KUMA_STORE_TYPE=kubernetes",
		"KUMA_STORE_KUBERNETES_SYSTEM_NAMESPACE="+kumaSystemNamespace,
		"KUMA_GENERAL_WORK_DIR="+workDir,
		"KUMA_GENERAL_TLS_CERT_FILE="+filepath.Join(cfg.tlsDir, "tls.crt"),
		"KUMA_GENERAL_TLS_KEY_FILE="+filepath.Join(cfg.tlsDir, "tls.key"),
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_ADDRESS=127.0.0.1",
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_PORT="+strconv.Itoa(c.admissionPort),
		"KUMA_RUNTIME_KUBERNETES_ADMISSION_SERVER_CERT_DIR="+cfg.tlsDir,
		"KUMA_MULTIZONE_GLOBAL_KDS_GRPC_PORT="+strconv.Itoa(c.kdsPort),
		// Every other listener on a port of its own: two CPs share this machine (and
		// whatever else runs on it).
		"KUMA_DIAGNOSTICS_SERVER_PORT="+strconv.Itoa(ports[2]),
		"KUMA_API_SERVER_HTTP_INTERFACE=127.0.0.1",
		"KUMA_API_SERVER_HTTP_PORT="+strconv.Itoa(ports[3]),
		"KUMA_API_SERVER_HTTPS_INTERFACE=127.0.0.1",
		"KUMA_API_SERVER_HTTPS_PORT="+strconv.Itoa(ports[4]),
		"KUMA_DP_SERVER_PORT="+strconv.Itoa(ports[5]),
		"KUMA_MONITORING_ASSIGNMENT_SERVER_PORT="+strconv.Itoa(ports[6]),
		"KUMA_REPORTS_ENABLED=false",
	)
	if cfg.mode == "zone" {
		env = append(env,
			"KUMA_MULTIZONE_ZONE_NAME="+cfg.zoneName,
			"KUMA_MULTIZONE_ZONE_GLOBAL_ADDRESS=grpcs://127.0.0.1:"+strconv.Itoa(cfg.globalKDSPort),
			"KUMA_MULTIZONE_ZONE_KDS_ROOT_CA_FILE="+filepath.Join(cfg.tlsDir, "ca.crt"),
		)
	}
	run := func() (*process, error) {
		cmd := kumaCPCommand(sb.Binaries.KumaCP, saDir, "run", "--log-level=info")
		cmd.Env = env
		return startCommand("kuma-cp-"+cfg.mode, sb.Dir, cmd)
	}
	start := time.Now()
	if c.proc, err = run(); err != nil {
		return nil, err
	}
	c.LogPath = c.proc.logPath
	defer func() {
		if err != nil {
			err = errors.Join(fmt.Errorf("start the %s CP (log: %s): %w", cfg.mode, c.LogPath, err), c.stop())
		}
	}()
	if err := c.waitListening(ctx); err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(filepath.Join(cfg.tlsDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("read the webhook CA: %w", err)
	}
	if err := applyKumaWebhook(ctx, sb.client, c.admissionPort, ca); err != nil {
		return nil, err
	}
	if err := c.waitWebhook(ctx); err != nil {
		return nil, err
	}
	c.Ready = time.Since(start)
	fmt.Fprintf(cfg.log, "sandbox: kuma-cp %s CP up, its webhook answering, in %s (pid %d, log %s)\n",
		cfg.mode, c.Ready.Round(10*time.Millisecond), c.proc.cmd.Process.Pid, c.LogPath)
	go c.supervise(run, cfg.log)
	return c, nil
}

// waitListening waits until the admission server accepts connections, so that the
// webhook configuration registered next finds it.
func (c *KumaCP) waitListening(ctx context.Context) error {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.admissionPort))
	return Poll(ctx, kumaStartTimeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := c.proc.exited(); done {
			return false, err
		}
		conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		if err != nil {
			return false, fmt.Errorf("admission server %s: %w", addr, err)
		}
		conn.Close()
		return true, nil
	})
}

// waitWebhook waits until Kuma's webhook gives its verdict on a TrafficRoute (dry run):
// on the Global a route without sources is refused as invalid, on a zone any route is
// refused as the Global CP's.
func (c *KumaCP) waitWebhook(ctx context.Context) error {
	probe := kumaProbeRoute(c.Mode == "zone")
	want := `admission webhook "` + kumaValidatorName + `" denied the request`
	return Poll(ctx, kumaStartTimeout, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := c.proc.exited(); done {
			return false, err
		}
		err := c.sb.client.Create(ctx, probe.DeepCopy(), client.DryRunAll)
		switch {
		case err == nil:
			return false, errors.New("Kuma's webhook let the probe TrafficRoute through")
		case !strings.Contains(err.Error(), want):
			return false, fmt.Errorf("no verdict of Kuma's webhook yet: %w", err)
		case c.Mode == "zone" && !strings.Contains(err.Error(), KumaZoneRefusal):
			return false, fmt.Errorf("the zone CP refused the probe TrafficRoute for another reason: %w", err)
		}
		return true, nil
	})
}

// kumaProbeRoute is a TrafficRoute for the webhook probes: valid for a zone (which must
// refuse it for its origin alone), without sources for the Global.
func kumaProbeRoute(valid bool) *unstructured.Unstructured {
	spec := map[string]any{}
	if valid {
		everyService := map[string]any{"kuma.io/service": "*"}
		spec = map[string]any{
			"sources":      []any{map[string]any{"match": everyService}},
			"destinations": []any{map[string]any{"match": everyService}},
			"conf":         map[string]any{"destination": everyService},
		}
	}
	return &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "kuma.io/v1alpha1",
		"kind":       "TrafficRoute",
		"metadata":   map[string]any{"name": "sandbox-kuma-webhook-probe"},
		"mesh":       "default",
		"spec":       spec,
	}}
}

// stop stops kuma-cp (it drains for up to 3 s on SIGTERM).
func (c *KumaCP) stop() error {
	if c == nil || c.proc == nil {
		return nil
	}
	return c.halt().stop(15 * time.Second)
}

// kill ends kuma-cp at once (Discard).
func (c *KumaCP) kill() error {
	return c.halt().kill()
}

// halt ends supervision: the process it returns is the last one, to stop.
func (c *KumaCP) halt() *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	return c.proc
}

// createMeshes creates each Mesh on the Global CP (an existing one is kept).
func createMeshes(ctx context.Context, global *Sandbox, meshes []string) error {
	for _, name := range meshes {
		mesh := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "kuma.io/v1alpha1", "kind": "Mesh",
			"metadata": map[string]any{"name": name}, "spec": map[string]any{},
		}}
		if err := global.client.Create(ctx, mesh); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create Mesh %s on the Global CP: %w", name, err)
		}
	}
	return nil
}

// waitMeshes waits until every Mesh exists on sb.
func waitMeshes(ctx context.Context, sb *Sandbox, meshes []string) error {
	return Poll(ctx, time.Minute, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		for _, name := range meshes {
			mesh := &unstructured.Unstructured{}
			mesh.SetAPIVersion("kuma.io/v1alpha1")
			mesh.SetKind("Mesh")
			if err := sb.client.Get(ctx, client.ObjectKey{Name: name}, mesh); err != nil {
				return false, fmt.Errorf("Mesh %s: %w", name, err)
			}
		}
		return true, nil
	})
}

// freePorts finds n distinct free loopback ports.
func freePorts(n int) ([]int, error) {
	seen := map[int]bool{}
	var ports []int
	for len(ports) < n {
		p, err := freePort()
		if err != nil {
			return nil, err
		}
		if !seen[p] {
			seen[p] = true
			ports = append(ports, p)
		}
	}
	return ports, nil
}
