package sandbox

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Binaries are the paths of the programs a sandbox runs.
type Binaries struct {
	KubeAPIServer         string
	KubeControllerManager string
	KubeScheduler         string
	Kubectl               string
	Etcd                  string
	Kwok                  string
	Prometheus            string
	// KumaCP is Kuma's control plane, run as the Global and the zone CP of multi-zone
	// scenarios (kumacp.go).
	KumaCP string
	// SourceController, KustomizeController and GitServer are Flux's parts (flux.go).
	// Build leaves them empty: BuildFlux builds them on demand.
	SourceController    string
	KustomizeController string
	GitServer           string
}

// tool is one binary built from a tools module under sandbox/tools.
type tool struct {
	// name is the binary's name.
	name string
	// toolsModule is the directory under sandbox/tools holding the module to build in.
	toolsModule string
	// module is the module whose version names the cache entry.
	module string
	// pkg is the main package.
	pkg string
	// tags are the build tags, if any.
	tags string
	// ldflags returns the linker flags for the module's version.
	ldflags func(version string) string
	// set stores the built path in Binaries.
	set func(b *Binaries, path string)
}

// kubeLDFlags stamps the version into component-base and client-go; without it the
// binaries report v0.0.0-master, which kubectl and discovery clients dislike. The order
// matches the warm-up build documented in the sandbox notes, so nothing differs from it.
func kubeLDFlags(version string) string {
	major, minor := "1", ""
	if parts := strings.SplitN(strings.TrimPrefix(version, "v"), ".", 3); len(parts) >= 2 {
		major, minor = parts[0], parts[1]
	}
	var b strings.Builder
	for _, pkg := range []string{"k8s.io/component-base/version", "k8s.io/client-go/pkg/version"} {
		fmt.Fprintf(&b, "-X %s.gitVersion=%s -X %s.gitMajor=%s -X %s.gitMinor=%s ", pkg, version, pkg, major, pkg, minor)
	}
	b.WriteString("-s -w")
	return b.String()
}

func stripLDFlags(string) string { return "-s -w" }

// kumaLDFlags stamps the version kuma-cp reports (its /versions, KDS handshakes and
// logs); unstamped it says "unknown".
func kumaLDFlags(version string) string {
	const pkg = "github.com/kumahq/kuma/pkg/version"
	return fmt.Sprintf("-X %s.version=%s -X %s.gitTag=%s -s -w", pkg, strings.TrimPrefix(version, "v"), pkg, version)
}

// tools lists what Build builds, in the order it builds them: cheap ones first so a
// first-time user sees progress early.
var tools = []tool{
	{name: "etcd", toolsModule: "etcd", module: "go.etcd.io/etcd/server/v3", pkg: "go.etcd.io/etcd/server/v3",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Etcd = p }},
	{name: "kube-apiserver", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-apiserver",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeAPIServer = p }},
	{name: "kubectl", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kubectl",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.Kubectl = p }},
	{name: "kube-controller-manager", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-controller-manager",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeControllerManager = p }},
	{name: "kube-scheduler", toolsModule: "kubernetes", module: "k8s.io/kubernetes", pkg: "k8s.io/kubernetes/cmd/kube-scheduler",
		ldflags: kubeLDFlags, set: func(b *Binaries, p string) { b.KubeScheduler = p }},
	{name: "kwok", toolsModule: "kwok", module: "sigs.k8s.io/kwok", pkg: "sigs.k8s.io/kwok/cmd/kwok",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Kwok = p }},
	// remove_all_sd drops every service discovery but file and http: a third of the build.
	{name: "prometheus", toolsModule: "prometheus", module: "github.com/prometheus/prometheus", pkg: "github.com/prometheus/prometheus/cmd/prometheus",
		tags: "remove_all_sd", ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.Prometheus = p }},
	// Last: only the multi-zone scenarios need it (~5 min of CPU cold).
	{name: "kuma-cp", toolsModule: "kuma", module: kumaModule, pkg: "github.com/kumahq/kuma/app/kuma-cp",
		ldflags: kumaLDFlags, set: func(b *Binaries, p string) { b.KumaCP = p }},
}

// fluxTools are optional: only the Flux scenarios need them, and their cold build
// (~20 min of CPU together) would more than double `make sandbox`. BuildFlux builds them.
var fluxTools = []tool{
	{name: "gitserver", toolsModule: "gitserver", module: gitTestServerModule, pkg: ".",
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.GitServer = p }},
	{name: "source-controller", toolsModule: "source-controller", module: sourceControllerModule, pkg: sourceControllerModule,
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.SourceController = p }},
	{name: "kustomize-controller", toolsModule: "kustomize-controller", module: kustomizeControllerModule, pkg: kustomizeControllerModule,
		ldflags: stripLDFlags, set: func(b *Binaries, p string) { b.KustomizeController = p }},
}

// Build builds the sandbox's binaries, or reuses them from
// ${XDG_CACHE_HOME:-~/.cache}/coalmine/sandbox/<tool>-<version>/, one module at a time
// (the Kubernetes binaries, in one go build, take most of it on two cores). It reports on w what it builds and
// how long that took. Concurrent callers in other processes wait for each other.
func Build(ctx context.Context, w io.Writer) (*Binaries, error) {
	return build(ctx, w, tools)
}

// BuildDemo builds what `coalmine demo` runs: Build's binaries but kubectl, which only the
// tests use (about a minute of a cold first `make demo`). Binaries.Kubectl is then the
// cached one if there is one, else empty.
func BuildDemo(ctx context.Context, w io.Writer) (*Binaries, error) {
	var ts []tool
	for _, t := range tools {
		if t.name != "kubectl" {
			ts = append(ts, t)
		}
	}
	bins, err := build(ctx, w, ts)
	if err != nil {
		return nil, err
	}
	for _, t := range tools {
		if t.name != "kubectl" {
			continue
		}
		toolsDir, err1 := ToolsDir()
		root, err2 := CacheDir()
		if err1 == nil && err2 == nil {
			if p, _, err := cachedPath(toolsDir, root, t); err == nil && isFile(p) {
				t.set(bins, p)
			}
		}
	}
	return bins, nil
}

func build(ctx context.Context, w io.Writer, ts []tool) (*Binaries, error) {
	if w == nil {
		w = io.Discard
	}
	b, err := lockBuild(ctx, w)
	if err != nil {
		return nil, err
	}
	defer b.unlock()
	goBin, toolsDir, root := b.goBin, b.toolsDir, b.root
	groups := buildGroups(ts)
	stopPrefetch := prefetch(ctx, goBin, toolsDir, root, groups)
	defer stopPrefetch()
	bins := &Binaries{}
	for _, group := range groups {
		if err := buildTogether(ctx, w, goBin, toolsDir, root, group); err != nil {
			return nil, err
		}
		for _, t := range group {
			out, err := buildTool(ctx, w, goBin, toolsDir, root, t)
			if err != nil {
				return nil, err
			}
			t.set(bins, out)
		}
	}
	return bins, nil
}

// prefetch downloads, in the background, the modules of each group with a binary to
// build, while the first groups compile: a cold build otherwise spends a minute or two
// with both cores idle, waiting for the module proxy before each tool. Failures are left
// for the build itself to report. The returned func stops it and waits.
func prefetch(ctx context.Context, goBin, toolsDir, root string, groups [][]tool) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for _, g := range groups {
			var pkgs []string
			for _, t := range g {
				if out, _, err := cachedPath(toolsDir, root, t); err == nil && !isFile(out) {
					pkgs = append(pkgs, t.pkg)
				}
			}
			if len(pkgs) == 0 || ctx.Err() != nil {
				continue
			}
			_ = downloadModules(ctx, goBin, filepath.Join(toolsDir, g[0].toolsModule), g[0].tags, pkgs...)
		}
	}()
	return func() { cancel(); <-done }
}

// buildGroups splits ts into runs of consecutive tools built from the same module with
// the same tags, which one go build can compile together.
func buildGroups(ts []tool) [][]tool {
	var groups [][]tool
	for _, t := range ts {
		if n := len(groups); n > 0 {
			last := groups[n-1][0]
			if last.toolsModule == t.toolsModule && last.tags == t.tags {
				groups[n-1] = append(groups[n-1], t)
				continue
			}
		}
		groups = append(groups, []tool{t})
	}
	return groups
}

// buildTogether builds the missing binaries of a group (tools of one module) in one go
// build. On two cores this is minutes faster than one build each: the go command
// compiles the packages they share once and keeps both cores busy across them, where one
// build at a time leaves a core idle through each binary's last big packages and its
// link. The binaries land in the cache as buildTool would put them; buildTool then finds
// them there. A group with fewer than two missing binaries is left to buildTool.
func buildTogether(ctx context.Context, w io.Writer, goBin, toolsDir, root string, group []tool) error {
	var missing []tool
	var outs []string
	version := ""
	for _, t := range group {
		out, v, err := cachedPath(toolsDir, root, t)
		if err != nil {
			return err
		}
		if !isFile(out) {
			missing, outs, version = append(missing, t), append(outs, out), v
		}
	}
	if len(missing) < 2 {
		return nil
	}
	names := make([]string, len(missing))
	pkgs := make([]string, len(missing))
	for i, t := range missing {
		names[i], pkgs[i] = t.name, t.pkg
		// One go build takes one -ldflags: the group's tools must agree on it.
		if t.ldflags(version) != missing[0].ldflags(version) {
			return fmt.Errorf("build %s with %s: their linker flags differ", t.name, missing[0].name)
		}
	}
	tmp, err := os.MkdirTemp(root, ".build-")
	if err != nil {
		return fmt.Errorf("create build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	moduleDir := filepath.Join(toolsDir, missing[0].toolsModule)
	fmt.Fprintf(w, "sandbox: building %s %s together (from %s) ...\n", strings.Join(names, ", "), version, moduleDir)
	start := time.Now()
	args := append(goBuildFlags(), "-ldflags", missing[0].ldflags(version))
	if missing[0].tags != "" {
		args = append(args, "-tags", missing[0].tags)
	}
	args = append(args, "-o", tmp+string(filepath.Separator))
	args = append(args, pkgs...)
	if err := runGo(ctx, goBin, moduleDir, args, w); err != nil {
		return fmt.Errorf("build %s: %w", strings.Join(names, ", "), err)
	}
	for i, t := range missing {
		// go build -o DIR/ names each binary after its package's last path element.
		if err := os.MkdirAll(filepath.Dir(outs[i]), 0o755); err != nil {
			return fmt.Errorf("create cache dir for %s: %w", t.name, err)
		}
		if err := os.Rename(filepath.Join(tmp, path.Base(t.pkg)), outs[i]); err != nil {
			return fmt.Errorf("install %s: %w", t.name, err)
		}
	}
	fmt.Fprintf(w, "sandbox: built %s %s in %s\n", strings.Join(names, ", "), version, time.Since(start).Round(time.Second))
	return nil
}

// buildTool returns t's binary from the cache, building it first if it is missing. The
// caller holds the cache's build lock.
func buildTool(ctx context.Context, w io.Writer, goBin, toolsDir, root string, t tool) (string, error) {
	moduleDir := filepath.Join(toolsDir, t.toolsModule)
	out, version, err := cachedPath(toolsDir, root, t)
	if err != nil {
		return "", err
	}
	if isFile(out) {
		return out, nil
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return "", fmt.Errorf("create cache dir for %s: %w", t.name, err)
	}
	fmt.Fprintf(w, "sandbox: building %s %s (from %s) ...\n", t.name, version, moduleDir)
	start := time.Now()
	if err := goBuild(ctx, goBin, moduleDir, t, version, out, w); err != nil {
		return "", err
	}
	fmt.Fprintf(w, "sandbox: built %s %s in %s\n", t.name, version, time.Since(start).Round(time.Second))
	return out, nil
}

// BuildFlux adds Flux's parts to bins, building them into the cache as Build does when
// they are not there yet. An error wrapping ErrModulesUnavailable means their modules
// are neither in the module cache nor downloadable (no network): a caller may skip.
func BuildFlux(ctx context.Context, w io.Writer, bins *Binaries) error {
	if w == nil {
		w = io.Discard
	}
	b, err := lockBuild(ctx, w)
	if err != nil {
		return err
	}
	defer b.unlock()
	for _, t := range fluxTools {
		if out, _, err := cachedPath(b.toolsDir, b.root, t); err == nil && !isFile(out) {
			if err := downloadModules(ctx, b.goBin, filepath.Join(b.toolsDir, t.toolsModule), t.tags, t.pkg); err != nil {
				return fmt.Errorf("build %s: %w", t.name, err)
			}
		}
		out, err := buildTool(ctx, w, b.goBin, b.toolsDir, b.root, t)
		if err != nil {
			return err
		}
		t.set(bins, out)
	}
	return nil
}

// ErrModulesUnavailable says a tools module's dependencies could not be downloaded.
var ErrModulesUnavailable = errors.New("the tools module's dependencies are not in the module cache and cannot be downloaded")

// downloadModules fetches the modules pkg's build needs (go list downloads what the
// module cache lacks, and compiles nothing), so a build that cannot start for want of the
// network says so apart from a build that fails.
func downloadModules(ctx context.Context, goBin, moduleDir, tags string, pkgs ...string) error {
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}"}
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	cmd := exec.CommandContext(ctx, goBin, append(args, pkgs...)...)
	cmd.Dir = moduleDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = io.Discard, &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%w: go list -deps %s in %s: %v\n%s", ErrModulesUnavailable, strings.Join(pkgs, " "), moduleDir, err, tail(stderr.String(), 2000))
	}
	return nil
}

// buildLock is the cache's build lock, held, and what a build needs.
type buildLock struct {
	goBin, toolsDir, root string
	unlock                func()
}

// lockBuild takes the cache's build lock: concurrent builds in other processes wait for
// each other instead of compiling the same binary twice on two cores.
func lockBuild(ctx context.Context, w io.Writer) (*buildLock, error) {
	toolsDir, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	root, err := CacheDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(root, 0o755); err != nil {
		return nil, fmt.Errorf("create sandbox cache: %w", err)
	}
	goBin, err := goCommand()
	if err != nil {
		return nil, err
	}
	unlock, err := lockFile(ctx, filepath.Join(root, ".build.lock"), func() {
		fmt.Fprintf(w, "sandbox: waiting for another process building into %s\n", root)
	})
	if err != nil {
		return nil, err
	}
	return &buildLock{goBin: goBin, toolsDir: toolsDir, root: root, unlock: unlock}, nil
}

// cachedPath is where t's binary lives in the cache, keyed by the version its tools
// module requires.
func cachedPath(toolsDir, root string, t tool) (path, version string, err error) {
	version, err = requiredVersion(filepath.Join(toolsDir, t.toolsModule, "go.mod"), t.module)
	if err != nil {
		return "", "", err
	}
	return filepath.Join(root, t.name+"-"+version, t.name), version, nil
}

// Cached reports whether every binary is in the cache already, so Build will not
// compile anything (a cold build takes about ten minutes on two cores).
func Cached() bool {
	toolsDir, err := ToolsDir()
	if err != nil {
		return false
	}
	root, err := CacheDir()
	if err != nil {
		return false
	}
	for _, t := range tools {
		if p, _, err := cachedPath(toolsDir, root, t); err != nil || !isFile(p) {
			return false
		}
	}
	return true
}

// goBuild builds t into a temporary name next to out and renames it, so an interrupted
// build never leaves a binary that looks complete.
func goBuild(ctx context.Context, goBin, moduleDir string, t tool, version, out string, w io.Writer) error {
	tmp := fmt.Sprintf("%s.tmp-%d", out, os.Getpid())
	defer os.Remove(tmp)
	args := append(goBuildFlags(), "-ldflags", t.ldflags(version))
	if t.tags != "" {
		args = append(args, "-tags", t.tags)
	}
	args = append(args, "-o", tmp, t.pkg)
	if err := runGo(ctx, goBin, moduleDir, args, w); err != nil {
		return fmt.Errorf("build %s: %w", t.name, err)
	}
	if err := os.Rename(tmp, out); err != nil {
		return fmt.Errorf("install %s: %w", t.name, err)
	}
	return nil
}

// goBuildFlags start every build of a sandbox binary. -dwarf=false: nothing debugs these
// binaries, and leaving out the debug information the linker's -w would strip anyway
// makes each package's compile cheaper.
func goBuildFlags() []string {
	return []string{"build", "-trimpath", "-gcflags=all=-dwarf=false"}
}

// runGo runs the go command in a tools module, its output to w and, on failure, in the
// error.
func runGo(ctx context.Context, goBin, moduleDir string, args []string, w io.Writer) error {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = moduleDir
	// The tools modules stand alone: a go.work above the repository must not pull them in.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	var output bytes.Buffer
	cmd.Stdout = io.MultiWriter(&output, w)
	cmd.Stderr = io.MultiWriter(&output, w)
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go %s in %s: %w\n%s", strings.Join(args, " "), moduleDir, err, tail(output.String(), 4000))
	}
	return nil
}

// CacheDir is where Build keeps binaries: ${XDG_CACHE_HOME:-~/.cache}/coalmine/sandbox.
func CacheDir() (string, error) {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find cache directory: %w", err)
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "coalmine", "sandbox"), nil
}

// ToolsDir finds sandbox/tools: next to this source file when it is on disk (go test,
// go run), else by walking up from the working directory to coalmine's go.mod.
func ToolsDir() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		dir := filepath.Join(filepath.Dir(file), "tools")
		if isDir(dir) {
			return dir, nil
		}
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "sandbox", "tools"), nil
}

const repoModule = "github.com/coalmine-dev/coalmine"

// RepoRoot walks up from the working directory to the directory whose go.mod declares
// coalmine's module.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		if mod, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && modulePath(mod) == repoModule {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod of " + repoModule + " above the working directory")
		}
		dir = parent
	}
}

func modulePath(gomod []byte) string {
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		if f := strings.Fields(s.Text()); len(f) == 2 && f[0] == "module" {
			return strings.Trim(f[1], `"`)
		}
	}
	return ""
}

// requiredVersion reads the version of module from the require directives of a go.mod.
func requiredVersion(gomodPath, module string) (string, error) {
	data, err := os.ReadFile(gomodPath)
	if err != nil {
		return "", fmt.Errorf("read tools module: %w", err)
	}
	v := parseRequiredVersion(data, module)
	if v == "" {
		return "", fmt.Errorf("read tools module %s: no require of %s", gomodPath, module)
	}
	return v, nil
}

func parseRequiredVersion(gomod []byte, module string) string {
	inBlock := false
	s := bufio.NewScanner(bytes.NewReader(gomod))
	for s.Scan() {
		line := s.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case f[0] == "require" && len(f) == 2 && f[1] == "(":
			inBlock = true
		case inBlock && f[0] == ")":
			inBlock = false
		case f[0] == "require" && len(f) == 3 && f[1] == module:
			return f[2]
		case inBlock && len(f) == 2 && f[0] == module:
			return f[1]
		}
	}
	return ""
}

// goCommand finds the go command: on PATH (go test and go run put GOROOT/bin first),
// else in the GOROOT this binary was built with.
func goCommand() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return p, nil
	}
	if root := runtime.GOROOT(); root != "" { //nolint:staticcheck // fallback only
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", errors.New("find the go command: not on PATH")
}

func isDir(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.IsDir()
}

func isFile(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
