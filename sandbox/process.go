package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// process is a child the sandbox started itself, logging to <dir>/<name>.log.
type process struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

// startProcess starts bin with args in its own process group, stdout and stderr
// appended to <logDir>/<name>.log. KUBECONFIG is dropped from the environment so a
// user's cluster can never be reached by accident.
func startProcess(name, logDir, bin string, args ...string) (*process, error) {
	return startCommand(name, logDir, exec.Command(bin, args...))
}

// startCommand starts cmd as startProcess does. A cmd with its own Env or SysProcAttr
// keeps them: Env then names every variable the child sees (KUBECONFIG included, which
// must then be a sandbox kubeconfig), and SysProcAttr must keep childAttrs' settings.
func startCommand(name, logDir string, cmd *exec.Cmd) (*process, error) {
	logPath := filepath.Join(logDir, name+".log")
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", name, err)
	}
	fmt.Fprintf(logFile, "=== %s %s\n", time.Now().Format(time.RFC3339), strings.Join(cmd.Args, " "))
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = childAttrs()
	}
	if cmd.Env == nil {
		cmd.Env = environWithout("KUBECONFIG")
	}
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

// environWithout is this process' environment less the named variables.
func environWithout(names ...string) []string {
	env := []string{}
	for _, kv := range os.Environ() {
		keep := true
		for _, n := range names {
			if strings.HasPrefix(kv, n+"=") {
				keep = false
			}
		}
		if keep {
			env = append(env, kv)
		}
	}
	return env
}

// exited reports whether the process has ended, with the error of its end.
func (p *process) exited() (bool, error) {
	select {
	case <-p.done:
		return true, fmt.Errorf("%s exited: %v (log: %s)", p.name, p.waitErr, p.logPath)
	default:
		return false, nil
	}
}

// stop sends SIGTERM to the process group and, after grace, SIGKILL. It returns once
// the process has been reaped.
func (p *process) stop(grace time.Duration) error {
	if done, _ := p.exited(); done {
		return nil
	}
	pgid := -p.cmd.Process.Pid
	if err := syscall.Kill(pgid, syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("stop %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		// Children the process forked itself die with their group.
		_ = syscall.Kill(pgid, syscall.SIGKILL)
		return nil
	case <-time.After(grace):
	}
	_ = syscall.Kill(pgid, syscall.SIGKILL)
	select {
	case <-p.done:
		return fmt.Errorf("stop %s: killed after %s without exiting on SIGTERM", p.name, grace)
	case <-time.After(5 * time.Second):
		return fmt.Errorf("stop %s: still running after SIGKILL", p.name)
	}
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// kill sends SIGKILL to the process group at once and waits for the reaping: for parts
// whose state is thrown away with the sandbox, where a graceful drain buys nothing.
func (p *process) kill() error {
	if done, _ := p.exited(); done {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(5 * time.Second):
		return fmt.Errorf("kill %s: still running after SIGKILL", p.name)
	}
}
