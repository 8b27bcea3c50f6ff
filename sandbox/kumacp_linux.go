package sandbox

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
)

// kumaMountScript runs in kuma-cp's private mount namespace (its own copy of the mount
// table: nothing here is seen outside) and makes the in-cluster namespace file appear
// there: "$1" is the directory to put at the service account path, "$2" a directory to
// cover with a small tmpfs first when that path does not exist (so it can be created
// without touching the host's file system), "" when it does; then it execs kuma-cp
// ("$3" and its arguments), keeping the pid, process group and parent-death signal.
const kumaMountScript = `set -e
sa=$(dirname ` + kumaNamespaceFile + `)
if [ -n "$2" ]; then
	mount -t tmpfs -o size=1m,mode=0755 sandbox-kuma-cp "$2"
	mkdir -p "$sa"
fi
mount --bind "$1" "$sa"
shift 2
exec "$@"
`

// kumaCPPlatformUnavailable says why this machine cannot give kuma-cp its private mount
// namespace, or "" when it can.
func kumaCPPlatformUnavailable() string {
	if uid := os.Geteuid(); uid != 0 {
		return fmt.Sprintf("kuma-cp %s reads the in-cluster namespace file %s, which the sandbox provides in a private mount namespace; "+
			"that needs root, and this runs as uid %d", KumaVersion, kumaNamespaceFile, uid)
	}
	for _, tool := range []string{"mount", "mkdir", "dirname"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Sprintf("kuma-cp's private mount namespace needs %s: %v", tool, err)
		}
	}
	return ""
}

// kumaCPCommand runs bin with args in a private mount namespace where saDir is the
// in-cluster service account directory. The child unshares its mount namespace before
// exec; Go then also makes the whole tree private, so no mount propagates to the host.
func kumaCPCommand(bin, saDir string, args ...string) *exec.Cmd {
	cmd := exec.Command("/bin/sh", append([]string{"-c", kumaMountScript, "kuma-cp", saDir, tmpfsBase(filepath.Dir(kumaNamespaceFile)), bin}, args...)...)
	attrs := childAttrs()
	attrs.Unshareflags = syscall.CLONE_NEWNS
	cmd.SysProcAttr = attrs
	return cmd
}

// tmpfsBase is the deepest existing ancestor of path, "" when path exists (in a pod, for
// example). The tmpfs hides what that directory holds from kuma-cp alone (on Debian
// /var/run is /run, which kuma-cp does not use); the sandbox's own files are elsewhere.
func tmpfsBase(path string) string {
	if isDir(path) {
		return ""
	}
	for !isDir(path) && path != "/" {
		path = filepath.Dir(path)
	}
	return path
}

// readRSS reads a process' resident set size from /proc.
func readRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, fmt.Errorf("read RSS of pid %d: %w", pid, err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse RSS of pid %d: %w", pid, err)
			}
			return kb * 1024, nil
		}
	}
	return 0, fmt.Errorf("read RSS of pid %d: no VmRSS line", pid)
}
