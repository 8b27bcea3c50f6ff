package sandbox

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/envtest"
)

// Flux's parts the sandbox runs for real (DESIGN §7): Flux's source-controller and
// kustomize-controller as processes out of cluster, and a Git server on loopback for them
// to clone from. Their versions are the ones the tools modules require.
const (
	sourceControllerModule    = "github.com/fluxcd/source-controller"
	kustomizeControllerModule = "github.com/fluxcd/kustomize-controller"
	gitTestServerModule       = "github.com/fluxcd/pkg/gittestserver"
	// FluxNamespace is where the controllers "run" (RUNTIME_NAMESPACE) and where their
	// ServiceAccounts live, as in a real Flux installation.
	FluxNamespace = "flux-system"
	// fluxStartTimeout bounds each part's start: health endpoint up, caches synced.
	fluxStartTimeout = 90 * time.Second
)

// Flux is a running source-controller, kustomize-controller and Git server. Stop it when
// done; the sandbox's own Stop does not.
type Flux struct {
	// GitURL is the Git server's base URL (http://127.0.0.1:<port>): repository <name> is
	// cloned from GitURL/<name>.git, and a push there creates it.
	GitURL string
	// StartUp is how long each part took from exec to ready (health endpoint answering
	// 200, Git server accepting connections), by name.
	StartUp map[string]time.Duration
	// Dir holds the Git repositories, the artifact storage, and the parts' logs
	// (<part>.log).
	Dir string

	sb       *Sandbox
	procs    []*process // gitserver, source-controller, kustomize-controller
	stopOnce sync.Once
	stopErr  error
}

// Part names, as in StartUp, RSS and the log file names.
const (
	FluxGitServer           = "gitserver"
	FluxSourceController    = "source-controller"
	FluxKustomizeController = "kustomize-controller"
)

// StartFlux installs Flux's CRDs (source.toolkit.fluxcd.io, kustomize.toolkit.fluxcd.io,
// from the controllers' modules) and RBAC, and starts the Git server and both controllers
// against the sandbox, each controller under its own ServiceAccount's identity
// (impersonated, like coalmine). On error nothing is left running.
func (s *Sandbox) StartFlux(ctx context.Context) (_ *Flux, err error) {
	b := s.Binaries
	if b == nil || b.SourceController == "" || b.KustomizeController == "" || b.GitServer == "" {
		return nil, errors.New("start Flux: the sandbox's Binaries lack source-controller, kustomize-controller or gitserver")
	}
	start := time.Now()
	f := &Flux{sb: s, Dir: filepath.Join(s.Dir, "flux"), StartUp: map[string]time.Duration{}}
	defer func() {
		if err != nil {
			err = errors.Join(err, f.Stop())
		}
	}()
	for _, d := range []string{f.Dir, filepath.Join(f.Dir, "git"), filepath.Join(f.Dir, "storage"), filepath.Join(f.Dir, "work")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("start Flux: %w", err)
		}
	}
	crds, rbac, err := fluxManifests(ctx)
	if err != nil {
		return nil, err
	}
	if _, err := envtest.InstallCRDs(s.Config, envtest.CRDInstallOptions{Paths: crds, ErrorIfPathMissing: true}); err != nil {
		return nil, fmt.Errorf("install Flux CRDs: %w", err)
	}
	if err := s.installFluxRBAC(ctx, rbac); err != nil {
		return nil, err
	}
	if err := f.startGitServer(ctx); err != nil {
		return nil, err
	}
	for _, name := range []string{FluxSourceController, FluxKustomizeController} {
		if err := f.startController(ctx, name); err != nil {
			return nil, err
		}
	}
	fmt.Fprintf(s.log, "sandbox: Flux up in %s (git server %s; start-up %s)\n",
		time.Since(start).Round(10*time.Millisecond), f.GitURL, f.StartUpSummary())
	return f, nil
}

// StartUpSummary says how long each part took to start, in start order.
func (f *Flux) StartUpSummary() string {
	var parts []string
	for _, n := range []string{FluxGitServer, FluxSourceController, FluxKustomizeController} {
		if d, ok := f.StartUp[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", n, d.Round(10*time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// startGitServer runs the Git server over <Dir>/git and waits for its URL.
func (f *Flux) startGitServer(ctx context.Context) error {
	start := time.Now()
	urlFile := filepath.Join(f.Dir, "gitserver.url")
	_ = os.Remove(urlFile)
	p, err := startProcess(FluxGitServer, f.Dir, f.sb.Binaries.GitServer,
		"-root", filepath.Join(f.Dir, "git"), "-url-file", urlFile)
	if err != nil {
		return err
	}
	f.procs = append(f.procs, p)
	err = Poll(ctx, fluxStartTimeout, 20*time.Millisecond, func(context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, err
		}
		data, err := os.ReadFile(urlFile)
		if err != nil {
			return false, fmt.Errorf("no URL from the git server yet: %w", err)
		}
		f.GitURL = strings.TrimSpace(string(data))
		return f.GitURL != "", nil
	})
	if err != nil {
		return fmt.Errorf("start git server (log %s): %w", p.logPath, err)
	}
	f.StartUp[FluxGitServer] = time.Since(start)
	return nil
}

// startController runs a controller as its ServiceAccount and waits until its readiness
// endpoint answers 200.
func (f *Flux) startController(ctx context.Context, name string) error {
	bin := f.sb.Binaries.SourceController
	if name == FluxKustomizeController {
		bin = f.sb.Binaries.KustomizeController
	}
	user, groups := fluxUser(name)
	kubeconfig, err := f.sb.KubeconfigFor(user, groups...)
	if err != nil {
		return err
	}
	ports := make([]int, 3)
	for i := range ports {
		if ports[i], err = freePort(); err != nil {
			return err
		}
	}
	health := fmt.Sprintf("127.0.0.1:%d", ports[1])
	args := []string{
		"--metrics-addr", fmt.Sprintf("127.0.0.1:%d", ports[0]),
		"--health-addr", health,
		"--enable-leader-election=false",
		"--watch-all-namespaces",
		"--log-level", "info",
	}
	if name == FluxSourceController {
		storage := fmt.Sprintf("127.0.0.1:%d", ports[2])
		args = append(args,
			"--storage-path", filepath.Join(f.Dir, "storage"),
			"--storage-addr", storage,
			"--storage-adv-addr", storage)
	}
	cmd := exec.Command(bin, args...)
	// Here KUBECONFIG is the sandbox's own, as the controller's ServiceAccount.
	cmd.Env = append(environWithout("KUBECONFIG", "RUNTIME_NAMESPACE"),
		"KUBECONFIG="+kubeconfig, "RUNTIME_NAMESPACE="+FluxNamespace)
	start := time.Now()
	p, err := startCommand(name, f.Dir, cmd)
	if err != nil {
		return err
	}
	f.procs = append(f.procs, p)
	hc := &http.Client{Timeout: time.Second}
	err = Poll(ctx, fluxStartTimeout, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+health+"/readyz", nil)
		if err != nil {
			return false, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return false, fmt.Errorf("%s not ready: %w", name, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("%s not ready: /readyz %s", name, resp.Status)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("start %s (log %s): %w", name, p.logPath, err)
	}
	f.StartUp[name] = time.Since(start)
	return nil
}

// LogPath is the log file of a part (FluxSourceController, ...).
func (f *Flux) LogPath(part string) string { return filepath.Join(f.Dir, part+".log") }

// RSS is the resident set size in bytes of each running part, by name.
func (f *Flux) RSS() map[string]int64 {
	out := map[string]int64{}
	for _, p := range f.procs {
		if done, _ := p.exited(); done {
			continue
		}
		if n, err := readRSS(p.cmd.Process.Pid); err == nil {
			out[p.name] = n
		}
	}
	return out
}

// Running reports an error when a part has exited.
func (f *Flux) Running() error {
	for _, p := range f.procs {
		if done, err := p.exited(); done {
			return err
		}
	}
	return nil
}

// Stop stops the controllers, then the Git server. Safe to call more than once.
func (f *Flux) Stop() error {
	f.stopOnce.Do(func() {
		var errs []error
		for i := len(f.procs) - 1; i >= 0; i-- {
			if err := f.procs[i].stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		f.stopErr = errors.Join(errs...)
	})
	return f.stopErr
}
