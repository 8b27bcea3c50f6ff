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
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Build builds the sandbox's binaries, or reuses them from
// ${XDG_CACHE_HOME:-~/.cache}/coalmine/sandbox/<tool>-<version>/, one module at a time
// (the Kubernetes binaries, in one go build, take most of it on two cores). It reports
// on w what it builds and how long that took. Concurrent callers in other processes wait
// for each other.
func Build(ctx context.Context, w io.Writer) (*Binaries, error) {
	return build(ctx, w, tools)
}

// BuildDemo builds what `coalmine demo` runs: Build's binaries but kubectl, which only the
// tests use (about a minute of a cold first `make demo`); Binaries.Kubectl stays empty.
func BuildDemo(ctx context.Context, w io.Writer) (*Binaries, error) {
	var ts []tool
	for _, t := range tools {
		if t.name != "kubectl" {
			ts = append(ts, t)
		}
	}
	return build(ctx, w, ts)
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
// compile anything (a cold build takes 20-30 minutes on two cores).
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
