package sandbox

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"
)

// FlaggerOptions say how to run Flagger out of cluster.
type FlaggerOptions struct {
	// Binary is Flagger's binary (BuildFlagger).
	Binary string
	// Kubeconfig is the file Flagger reads; KubeconfigFor(FlaggerUser()) gives one that
	// acts as Flagger's ServiceAccount, so the sandbox's RBAC judges its requests.
	Kubeconfig string
	// MetricsServer is the Prometheus Flagger queries (-metrics-server).
	MetricsServer string
	// Port is Flagger's HTTP port (its /metrics); 0 picks a free one.
	Port int
	// LogDir holds flagger.log.
	LogDir string
	// Args are more flags, e.g. -namespace=<ns> to watch one namespace only.
	Args []string
}

// FlaggerProcess is a running Flagger.
type FlaggerProcess struct {
	p    *process
	Port int
}

// StartFlagger starts Flagger with -mesh-provider=kuma and -log-level=info (its default,
// debug, logs every step), and returns once it has started its workers (at most 2
// minutes). Stop ends it.
func StartFlagger(ctx context.Context, o FlaggerOptions) (*FlaggerProcess, error) {
	if o.Binary == "" || o.Kubeconfig == "" || o.MetricsServer == "" || o.LogDir == "" {
		return nil, fmt.Errorf("start Flagger: Binary, Kubeconfig, MetricsServer and LogDir are required")
	}
	port := o.Port
	if port == 0 {
		var err error
		if port, err = freePort(); err != nil {
			return nil, fmt.Errorf("start Flagger: %w", err)
		}
	}
	args := append([]string{
		"-kubeconfig=" + o.Kubeconfig,
		"-mesh-provider=kuma",
		"-metrics-server=" + o.MetricsServer,
		"-port=" + strconv.Itoa(port),
		"-log-level=info",
	}, o.Args...)
	// The log is appended to: look for the start line only after what is there now.
	var from int64
	if fi, err := os.Stat(filepath.Join(o.LogDir, "flagger.log")); err == nil {
		from = fi.Size()
	}
	// Flagger reads KUBECONFIG too: startCommand drops it, so only -kubeconfig counts.
	p, err := startCommand("flagger", o.LogDir, exec.Command(o.Binary, args...))
	if err != nil {
		return nil, err
	}
	f := &FlaggerProcess{p: p, Port: port}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	for {
		if data, err := os.ReadFile(p.logPath); err == nil && int64(len(data)) > from &&
			bytes.Contains(data[from:], []byte("Started operator workers")) {
			return f, nil
		}
		if done, err := p.exited(); done {
			return nil, fmt.Errorf("start Flagger: %w", err)
		}
		select {
		case <-ctx.Done():
			_ = p.stop(5 * time.Second)
			return nil, fmt.Errorf("start Flagger: workers not started (log: %s): %w", p.logPath, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// Pid is Flagger's process id.
func (f *FlaggerProcess) Pid() int { return f.p.cmd.Process.Pid }

// LogPath is Flagger's log file.
func (f *FlaggerProcess) LogPath() string { return f.p.logPath }

// Exited reports whether Flagger has ended, with the error of its end.
func (f *FlaggerProcess) Exited() (bool, error) { return f.p.exited() }

// Stop ends Flagger: SIGTERM, then SIGKILL after 15 s.
func (f *FlaggerProcess) Stop() error { return f.p.stop(15 * time.Second) }
