package sandbox

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"
)

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
