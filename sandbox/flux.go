package sandbox

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
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
	// (flux-<part>.log).
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
		time.Since(start).Round(10*time.Millisecond), f.GitURL, f.startUpSummary())
	return f, nil
}

func (f *Flux) startUpSummary() string {
	var parts []string
	for _, n := range []string{FluxGitServer, FluxSourceController, FluxKustomizeController} {
		if d, ok := f.StartUp[n]; ok {
			parts = append(parts, fmt.Sprintf("%s %s", n, d.Round(10*time.Millisecond)))
		}
	}
	return strings.Join(parts, ", ")
}

// fluxManifests finds the CRD directories and the generated controller ClusterRoles
// (config/rbac/role.yaml) of both controllers in the module cache, at the versions the
// tools modules require. The role files map a controller name to its path.
func fluxManifests(ctx context.Context) (crds []string, roles map[string]string, err error) {
	toolsDir, err := ToolsDir()
	if err != nil {
		return nil, nil, err
	}
	roles = map[string]string{}
	for _, c := range []struct{ name, module string }{
		{FluxSourceController, sourceControllerModule},
		{FluxKustomizeController, kustomizeControllerModule},
	} {
		version, err := requiredVersion(filepath.Join(toolsDir, c.name, "go.mod"), c.module)
		if err != nil {
			return nil, nil, err
		}
		dir, err := moduleDir(ctx, c.module, version)
		if err != nil {
			return nil, nil, err
		}
		crd := filepath.Join(dir, "config", "crd", "bases")
		if !isDir(crd) {
			return nil, nil, fmt.Errorf("find %s CRDs: %s is missing", c.name, crd)
		}
		crds = append(crds, crd)
		roles[c.name] = filepath.Join(dir, "config", "rbac", "role.yaml")
	}
	return crds, roles, nil
}

// fluxUser is the identity a controller runs as: its ServiceAccount in flux-system.
func fluxUser(name string) (string, []string) { return ServiceAccountUser(FluxNamespace, name) }

// installFluxRBAC creates flux-system, a ServiceAccount per controller, and binds each to
// the ClusterRole its module generates (renamed flux-<controller>). The
// kustomize-controller also gets cluster-admin, as Flux's own installation gives it
// (ClusterRoleBinding cluster-reconciler): it applies whatever the repository holds, here
// Deployments, Services and Canaries.
func (s *Sandbox) installFluxRBAC(ctx context.Context, roleFiles map[string]string) error {
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: FluxNamespace}}
	if err := s.client.Create(ctx, ns); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create namespace %s: %w", FluxNamespace, err)
	}
	for name, file := range roleFiles {
		sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: FluxNamespace, Name: name}}
		if err := s.client.Create(ctx, sa); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create ServiceAccount %s: %w", name, err)
		}
		role, err := readClusterRole(file)
		if err != nil {
			return err
		}
		roleName := "flux-" + name
		role.ObjectMeta = metav1.ObjectMeta{Name: roleName}
		if err := createOrUpdate(ctx, s, role); err != nil {
			return err
		}
		roles := []string{roleName}
		if name == FluxKustomizeController {
			roles = append(roles, "cluster-admin")
		}
		for _, r := range roles {
			binding := &rbacv1.ClusterRoleBinding{
				ObjectMeta: metav1.ObjectMeta{Name: "flux-" + name + "-" + r},
				RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: r},
				Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: FluxNamespace, Name: name}},
			}
			if err := createOrUpdate(ctx, s, binding); err != nil {
				return err
			}
		}
	}
	return nil
}

func readClusterRole(path string) (*rbacv1.ClusterRole, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read Flux RBAC: %w", err)
	}
	role := &rbacv1.ClusterRole{}
	if err := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(string(data)), 4096).Decode(role); err != nil {
		return nil, fmt.Errorf("read Flux RBAC %s: %w", path, err)
	}
	if role.Kind != "ClusterRole" || len(role.Rules) == 0 {
		return nil, fmt.Errorf("read Flux RBAC %s: not a ClusterRole with rules", path)
	}
	return role, nil
}

// createOrUpdate creates obj, or updates it when it exists (a second StartFlux on the same
// sandbox).
func createOrUpdate(ctx context.Context, s *Sandbox, obj client.Object) error {
	err := s.client.Create(ctx, obj)
	if err == nil {
		return nil
	}
	if !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create %s: %w", obj.GetName(), err)
	}
	current := obj.DeepCopyObject().(client.Object)
	if err := s.client.Get(ctx, client.ObjectKeyFromObject(obj), current); err != nil {
		return fmt.Errorf("get %s: %w", obj.GetName(), err)
	}
	obj.SetResourceVersion(current.GetResourceVersion())
	if err := s.client.Update(ctx, obj); err != nil {
		return fmt.Errorf("update %s: %w", obj.GetName(), err)
	}
	return nil
}

// startGitServer runs the Git server over <Dir>/git and waits for its URL.
func (f *Flux) startGitServer(ctx context.Context) error {
	start := time.Now()
	urlFile := filepath.Join(f.Dir, "gitserver.url")
	_ = os.Remove(urlFile)
	p, err := startFluxProcess(FluxGitServer, f.Dir, f.sb.Binaries.GitServer, nil,
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
	env := []string{"KUBECONFIG=" + kubeconfig, "RUNTIME_NAMESPACE=" + FluxNamespace}
	start := time.Now()
	p, err := startFluxProcess(name, f.Dir, bin, env, args...)
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
		if n, err := processRSS(p.cmd.Process.Pid); err == nil {
			out[p.name] = n
		}
	}
	return out
}

// processRSS reads VmRSS of pid from /proc (Linux only).
func processRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
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

// FluxApply is one server-side apply of a Kustomization as the kustomize-controller logged
// it ("server-side apply completed"): what happened to each object ("created",
// "configured", "unchanged", ...) at which source revision.
type FluxApply struct {
	Time     time.Time
	Revision string
	// Output maps "Kind/namespace/name" to the action.
	Output map[string]string
}

// Applies reads every server-side apply the kustomize-controller logged for the
// Kustomization namespace/name, oldest first. Flux reports drift this way: an object
// whose live state differs from the repository is "configured" again on a reconciliation
// of an unchanged revision.
func (f *Flux) Applies(namespace, name string) ([]FluxApply, error) {
	file, err := os.Open(f.LogPath(FluxKustomizeController))
	if err != nil {
		return nil, err
	}
	defer file.Close()
	var out []FluxApply
	sc := bufio.NewScanner(file)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	for sc.Scan() {
		line := sc.Bytes()
		if !strings.Contains(string(line), "server-side apply completed") {
			continue
		}
		var entry struct {
			TS        string            `json:"ts"`
			Msg       string            `json:"msg"`
			Name      string            `json:"name"`
			Namespace string            `json:"namespace"`
			Revision  string            `json:"revision"`
			Output    map[string]string `json:"output"`
		}
		if err := json.Unmarshal(line, &entry); err != nil || entry.Msg != "server-side apply completed" {
			continue
		}
		if entry.Name != name || entry.Namespace != namespace {
			continue
		}
		ts, _ := time.Parse(time.RFC3339Nano, entry.TS)
		out = append(out, FluxApply{Time: ts, Revision: entry.Revision, Output: entry.Output})
	}
	return out, sc.Err()
}

// GitRepo is a working copy whose commits are pushed to the sandbox's Git server: what a
// developer or a CI job does to release through Flux.
type GitRepo struct {
	// URL is what a GitRepository's spec.url points at.
	URL string
	// Dir is the working copy.
	Dir string
}

// NewGitRepo creates an empty working copy for repository name (branch main); its first
// Commit creates the repository on the server.
func (f *Flux) NewGitRepo(ctx context.Context, name string) (*GitRepo, error) {
	r := &GitRepo{URL: f.GitURL + "/" + name + ".git", Dir: filepath.Join(f.Dir, "work", name)}
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("create working copy: %w", err)
	}
	if _, err := r.git(ctx, "init", "--initial-branch=main"); err != nil {
		return nil, err
	}
	return r, nil
}

// Commit writes files (path relative to the repository -> content; nil removes the file),
// commits everything with message and pushes main. It returns the commit's hash.
func (r *GitRepo) Commit(ctx context.Context, message string, files map[string][]byte) (string, error) {
	for path, content := range files {
		p := filepath.Join(r.Dir, filepath.FromSlash(path))
		if content == nil {
			if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
				return "", err
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return "", err
		}
		if err := os.WriteFile(p, content, 0o644); err != nil {
			return "", err
		}
	}
	if _, err := r.git(ctx, "add", "-A"); err != nil {
		return "", err
	}
	if _, err := r.git(ctx, "commit", "--allow-empty", "-m", message); err != nil {
		return "", err
	}
	return r.push(ctx)
}

// Revert commits the revert of the last commit (git revert HEAD) and pushes it.
func (r *GitRepo) Revert(ctx context.Context) (string, error) {
	if _, err := r.git(ctx, "revert", "--no-edit", "HEAD"); err != nil {
		return "", err
	}
	return r.push(ctx)
}

func (r *GitRepo) push(ctx context.Context) (string, error) {
	if _, err := r.git(ctx, "push", r.URL, "main"); err != nil {
		return "", err
	}
	sha, err := r.git(ctx, "rev-parse", "HEAD")
	return strings.TrimSpace(sha), err
}

// git runs git in the working copy with no user or system configuration, as a fixed
// author, never prompting.
func (r *GitRepo) git(ctx context.Context, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = r.Dir
	cmd.Env = append(os.Environ(),
		"GIT_CONFIG_GLOBAL=/dev/null", "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0",
		"GIT_AUTHOR_NAME=coalmine sandbox", "GIT_AUTHOR_EMAIL=sandbox@coalmine.invalid",
		"GIT_COMMITTER_NAME=coalmine sandbox", "GIT_COMMITTER_EMAIL=sandbox@coalmine.invalid")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("git %s: %w\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// startFluxProcess is startProcess with extra environment (the controllers take their
// kubeconfig from KUBECONFIG, which startProcess drops so nothing reaches a user's
// cluster by accident: here it is always a sandbox kubeconfig).
func startFluxProcess(name, logDir, bin string, env []string, args ...string) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	fmt.Fprintf(logFile, "=== %s %s %s\n", time.Now().Format(time.RFC3339), bin, strings.Join(args, " "))
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	cmd.SysProcAttr = childAttrs()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, logPath: logPath, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logFile.Close()
		close(p.done)
	}()
	return p, nil
}
