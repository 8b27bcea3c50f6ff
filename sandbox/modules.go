package sandbox

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// Versions of the modules whose files (not code) the sandbox reads.
const (
	// KumaVersion is the Kuma release whose CRDs the sandbox installs: the last one whose
	// chart ships TrafficRoute as the seed's Global CP serves it (cluster-scoped, mesh at
	// the top level).
	KumaVersion = "v1.8.1"
	kumaModule  = "github.com/kumahq/kuma"
	kwokModule  = "sigs.k8s.io/kwok"
)

// moduleDir downloads module@version through the Go module proxy (or finds it in the
// module cache) and returns its directory. It runs outside any module, so no go.mod or
// go.sum is touched.
func moduleDir(ctx context.Context, module, version string) (string, error) {
	goBin, err := goCommand()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, goBin, "mod", "download", "-json", module+"@"+version)
	cmd.Dir = os.TempDir()
	cmd.Env = append(os.Environ(), "GOWORK=off", "GO111MODULE=on")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var info struct {
		Dir   string
		Error string
	}
	if err := json.Unmarshal(stdout.Bytes(), &info); err != nil && runErr == nil {
		return "", fmt.Errorf("download %s@%s: parse go mod download output: %w", module, version, err)
	}
	if runErr != nil || info.Error != "" || info.Dir == "" {
		return "", fmt.Errorf("download %s@%s: %v %s %s", module, version, runErr, info.Error, stderr.String())
	}
	return info.Dir, nil
}

// KumaCRDDir returns the directory of Kuma's CRDs (deployments/charts/kuma/crds) in the
// module cache.
func KumaCRDDir(ctx context.Context) (string, error) {
	dir, err := moduleDir(ctx, kumaModule, KumaVersion)
	if err != nil {
		return "", err
	}
	crds := filepath.Join(dir, "deployments", "charts", "kuma", "crds")
	if !isDir(crds) {
		return "", fmt.Errorf("find Kuma CRDs: %s is missing", crds)
	}
	return crds, nil
}

// kwokStageFiles returns the stage files kwok needs to make a node Ready, keep it Ready
// with a lease, and walk pods through Ready, completion and deletion, from the kwok
// module of the tools module's version.
func kwokStageFiles(ctx context.Context) ([]string, error) {
	toolsDir, err := ToolsDir()
	if err != nil {
		return nil, err
	}
	version, err := requiredVersion(filepath.Join(toolsDir, "kwok", "go.mod"), kwokModule)
	if err != nil {
		return nil, err
	}
	dir, err := moduleDir(ctx, kwokModule, version)
	if err != nil {
		return nil, err
	}
	files := []string{
		"kustomize/stage/node/fast/node-initialize.yaml",
		"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"kustomize/stage/pod/fast/pod-ready.yaml",
		"kustomize/stage/pod/fast/pod-complete.yaml",
		"kustomize/stage/pod/fast/pod-delete.yaml",
	}
	paths := make([]string, 0, len(files))
	for _, f := range files {
		p := filepath.Join(dir, filepath.FromSlash(f))
		if _, err := os.Stat(p); err != nil {
			return nil, fmt.Errorf("find kwok stage %s: %w", f, err)
		}
		paths = append(paths, p)
	}
	return paths, nil
}

// ToolVersion is the version of the named sandbox binary ("kube-apiserver", "kuma-cp",
// "kustomize-controller", ...) as its tools module requires it: the version Build and
// BuildFlux build and cache. The demo prints it for each real part it runs.
func ToolVersion(name string) (string, error) {
	toolsDir, err := ToolsDir()
	if err != nil {
		return "", err
	}
	for _, t := range append(append([]tool{}, tools...), fluxTools...) {
		if t.name == name {
			return requiredVersion(filepath.Join(toolsDir, t.toolsModule, "go.mod"), t.module)
		}
	}
	return "", fmt.Errorf("no sandbox tool named %s", name)
}
