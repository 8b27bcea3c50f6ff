package sandbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"k8s.io/client-go/rest"
)

// Outages of the apiserver, for chaos tests: StopAPIServer kills the sandbox's
// kube-apiserver as a crash would (SIGKILL), keeping etcd, the certificates and the port;
// StartAPIServer starts it again with the very same flags. Clients see connection refused
// in between and their watches resume afterwards. A multi-zone test cuts the Global
// control plane this way (a ControlPlaneOnly sandbox).
//
// envtest starts the apiserver and keeps no handle a caller can reach, so the process is
// found by its --secure-port in /proc (Linux only), and a restarted one is the sandbox's
// own child: call StopRestartedAPIServer before Stop, which only knows envtest's.

// restartedAPIServers are the apiservers StartAPIServer started, per sandbox.
var restartedAPIServers = struct {
	sync.Mutex
	m map[*Sandbox]*apiserverState
}{m: map[*Sandbox]*apiserverState{}}

type apiserverState struct {
	args []string // argv of the apiserver as envtest started it
	proc *process // the restarted one, nil while down or while envtest's runs
	pid  int      // the running apiserver's pid, 0 while down
}

// StopAPIServer kills the apiserver with SIGKILL and waits until its port refuses
// connections. etcd and everything else keep running.
func (s *Sandbox) StopAPIServer() error {
	restartedAPIServers.Lock()
	defer restartedAPIServers.Unlock()
	st := restartedAPIServers.m[s]
	if st == nil {
		port, err := s.apiserverPort()
		if err != nil {
			return err
		}
		pid, args, err := findAPIServer(port)
		if err != nil {
			return err
		}
		st = &apiserverState{args: args, pid: pid}
		restartedAPIServers.m[s] = st
	}
	if st.pid == 0 {
		return nil // already down
	}
	if st.proc != nil {
		_ = syscall.Kill(-st.proc.cmd.Process.Pid, syscall.SIGKILL)
		<-st.proc.done
		st.proc = nil
	} else if err := syscall.Kill(st.pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill kube-apiserver: %w", err)
	}
	st.pid = 0
	// envtest reaps its own child; wait until nothing answers on the port.
	return Poll(context.Background(), 10*time.Second, 20*time.Millisecond, func(context.Context) (bool, error) {
		if _, err := http.Get(strings.TrimSuffix(s.Config.Host, "/") + "/readyz"); err == nil || !errors.Is(err, syscall.ECONNREFUSED) {
			return false, errors.New("kube-apiserver still accepts connections")
		}
		return true, nil
	})
}

// StartAPIServer starts the apiserver StopAPIServer stopped, with the same flags, and
// returns once it reports ready. It does nothing if the apiserver runs.
func (s *Sandbox) StartAPIServer(ctx context.Context) error {
	restartedAPIServers.Lock()
	defer restartedAPIServers.Unlock()
	st := restartedAPIServers.m[s]
	if st == nil || st.pid != 0 {
		return nil
	}
	start := time.Now()
	p, err := startProcess("kube-apiserver", s.Dir, st.args[0], st.args[1:]...)
	if err != nil {
		return err
	}
	st.proc, st.pid = p, p.cmd.Process.Pid
	hc, err := rest.HTTPClientFor(s.Config)
	if err != nil {
		return fmt.Errorf("apiserver client: %w", err)
	}
	err = Poll(ctx, 60*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, err
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(s.Config.Host, "/")+"/readyz", nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return false, fmt.Errorf("kube-apiserver /readyz: %s", resp.Status)
		}
		return true, nil
	})
	if err != nil {
		return fmt.Errorf("restart kube-apiserver (log: %s): %w", p.logPath, err)
	}
	fmt.Fprintf(s.log, "sandbox: kube-apiserver restarted in %s\n", time.Since(start).Round(10*time.Millisecond))
	return nil
}

// StopRestartedAPIServer stops an apiserver that StartAPIServer started (SIGTERM, then
// SIGKILL). Call it before Stop: Stop stops envtest's apiserver and etcd only.
func (s *Sandbox) StopRestartedAPIServer() error {
	restartedAPIServers.Lock()
	defer restartedAPIServers.Unlock()
	st := restartedAPIServers.m[s]
	delete(restartedAPIServers.m, s)
	if st == nil || st.proc == nil {
		return nil
	}
	return st.proc.stop(30 * time.Second)
}

func (s *Sandbox) apiserverPort() (int, error) {
	u, err := url.Parse(s.Config.Host)
	if err != nil {
		return 0, fmt.Errorf("parse apiserver address %q: %w", s.Config.Host, err)
	}
	return strconv.Atoi(u.Port())
}

// findAPIServer finds the kube-apiserver process serving port and its argv.
func findAPIServer(port int) (int, []string, error) {
	dirs, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil || len(dirs) == 0 {
		return 0, nil, errors.New("find kube-apiserver: /proc is not available")
	}
	want := []byte("--secure-port=" + strconv.Itoa(port) + "\x00")
	for _, path := range dirs {
		data, err := os.ReadFile(path)
		if err != nil || !bytes.Contains(data, want) {
			continue
		}
		args := bytes.Split(bytes.TrimSuffix(data, []byte{0}), []byte{0})
		if len(args) == 0 || filepath.Base(string(args[0])) != "kube-apiserver" {
			continue
		}
		pid, err := strconv.Atoi(filepath.Base(filepath.Dir(path)))
		if err != nil {
			continue
		}
		out := make([]string, len(args))
		for i, a := range args {
			out[i] = string(a)
		}
		if _, err := exec.LookPath(out[0]); err != nil {
			return 0, nil, fmt.Errorf("find kube-apiserver: binary %s: %w", out[0], err)
		}
		return pid, out, nil
	}
	return 0, nil, fmt.Errorf("find kube-apiserver: no process serves --secure-port=%d", port)
}
