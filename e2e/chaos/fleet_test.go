package chaos

import (
	"bytes"
	"context"
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
	"syscall"
	"time"

	"github.com/coalmine-dev/coalmine/cmd/coalmine/demo"
)

// fleet runs bin/coalmine as OS processes ("replicas", each on its own ports and
// certificate directory), kills them with SIGKILL and starts them again. The webhook
// configurations call one URL, the balancer's; it forwards each connection to a ready
// replica, as a Service with two endpoints would.
type fleet struct {
	bin, dir string
	args     []string // flags every replica gets
	lb       *balancer
	slots    []*replica

	mu   sync.Mutex
	runs []*incarnation // every process started, in order
}

// replica is one slot: its ports stay the same across restarts.
type replica struct {
	idx                              int
	webhookPort, healthPort, metrics int
	certDir                          string
	cur                              *incarnation // nil while down
}

// incarnation is one process of a slot.
type incarnation struct {
	slot     int
	n        int // restart counter of the slot
	cmd      *exec.Cmd
	logPath  string
	started  time.Time
	done     chan struct{}
	mu       sync.Mutex
	readyAt  time.Time // first /readyz 200
	ready    bool
	killedAt time.Time
	exitErr  error
	// leading: the log said it acquired the Lease; logOffset: how far the log was read.
	leading   bool
	logOffset int64
}

func newFleet(bin, dir string, slots int, args []string) (*fleet, error) {
	f := &fleet{bin: bin, dir: dir, args: args}
	for i := 0; i < slots; i++ {
		r := &replica{idx: i, certDir: filepath.Join(dir, fmt.Sprintf("coalmine-%d-certs", i))}
		for _, p := range []*int{&r.webhookPort, &r.healthPort, &r.metrics} {
			port, err := demo.FreePort()
			if err != nil {
				return nil, err
			}
			*p = port
		}
		f.slots = append(f.slots, r)
	}
	lb, err := newBalancer(f)
	if err != nil {
		return nil, err
	}
	f.lb = lb
	return f, nil
}

// start starts slot i's process (it must be down) and returns without waiting.
func (f *fleet) start(i int) (*incarnation, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	r := f.slots[i]
	if r.cur != nil {
		return nil, fmt.Errorf("replica %d runs", i)
	}
	n := 0
	for _, in := range f.runs {
		if in.slot == i {
			n++
		}
	}
	in := &incarnation{slot: i, n: n, done: make(chan struct{}),
		logPath: filepath.Join(f.dir, fmt.Sprintf("coalmine-%d.%d.log", i, n))}
	logFile, err := os.Create(in.logPath)
	if err != nil {
		return nil, fmt.Errorf("create log: %w", err)
	}
	args := append([]string{
		"--webhook-host=127.0.0.1", "--webhook-port=" + strconv.Itoa(r.webhookPort),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(r.healthPort),
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(r.metrics),
		"--cert-dir=" + r.certDir,
	}, f.args...)
	cmd := exec.Command(f.bin, args...)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	// Its own process group, and killed with this test if it dies: no coalmine outlives it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "KUBECONFIG=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	if err := cmd.Start(); err != nil {
		logFile.Close()
		return nil, fmt.Errorf("start coalmine: %w", err)
	}
	in.cmd, in.started = cmd, time.Now()
	go func() {
		err := cmd.Wait()
		logFile.Close()
		in.mu.Lock()
		in.exitErr = err
		in.ready = false
		in.mu.Unlock()
		close(in.done)
	}()
	go f.probe(r, in)
	r.cur = in
	f.runs = append(f.runs, in)
	return in, nil
}

// probe polls the incarnation's /readyz until it exits: the balancer sends connections to
// ready replicas only, as a Service does with a readiness probe.
func (f *fleet) probe(r *replica, in *incarnation) {
	url := "http://127.0.0.1:" + strconv.Itoa(r.healthPort) + "/readyz"
	client := &http.Client{Timeout: time.Second}
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-in.done:
			return
		case <-tick.C:
		}
		ok := false
		if resp, err := client.Get(url); err == nil {
			ok = resp.StatusCode == http.StatusOK
			resp.Body.Close()
		}
		in.mu.Lock()
		if in.killedAt.IsZero() {
			if ok && in.readyAt.IsZero() {
				in.readyAt = time.Now()
			}
			in.ready = ok
		}
		in.mu.Unlock()
	}
}

// kill sends SIGKILL to slot i's process group and waits until it is reaped.
func (f *fleet) kill(i int) (*incarnation, error) {
	f.mu.Lock()
	r := f.slots[i]
	in := r.cur
	if in == nil {
		f.mu.Unlock()
		return nil, fmt.Errorf("replica %d is down", i)
	}
	in.mu.Lock()
	in.killedAt, in.ready = time.Now(), false
	in.mu.Unlock()
	r.cur = nil
	f.mu.Unlock()
	f.lb.dropBackend(i)
	if err := syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return in, fmt.Errorf("kill coalmine: %w", err)
	}
	select {
	case <-in.done:
		return in, nil
	case <-time.After(10 * time.Second):
		return in, errors.New("coalmine not reaped 10s after SIGKILL")
	}
}

// waitReady waits until in answers /readyz, or fails if it exits first.
func (in *incarnation) waitReady(ctx context.Context, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		in.mu.Lock()
		ok := in.ready
		in.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-in.done:
			return fmt.Errorf("coalmine %d.%d exited before it was ready: %v; log ends:\n%s", in.slot, in.n, in.exitErr, logTail(in.logPath, 15))
		case <-ctx.Done():
			return fmt.Errorf("coalmine %d.%d not ready after %s; log ends:\n%s", in.slot, in.n, timeout, logTail(in.logPath, 15))
		case <-tick.C:
		}
	}
}

// isReady reports whether slot i runs and is ready now.
func (f *fleet) isReady(i int) bool {
	f.mu.Lock()
	in := f.slots[i].cur
	f.mu.Unlock()
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.ready
}

// running are the slots with a process.
func (f *fleet) running() []int {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []int
	for i, r := range f.slots {
		if r.cur != nil {
			out = append(out, i)
		}
	}
	return out
}

// leads reports whether slot i's current process holds the leader Lease, from its log
// (controller-runtime logs the acquisition once; a replica never gives the Lease up but
// by exiting).
func (f *fleet) leads(i int) bool {
	f.mu.Lock()
	in := f.slots[i].cur
	f.mu.Unlock()
	if in == nil {
		return false
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.leading {
		return true
	}
	file, err := os.Open(in.logPath)
	if err != nil {
		return false
	}
	defer file.Close()
	if _, err := file.Seek(in.logOffset, io.SeekStart); err != nil {
		return false
	}
	data, _ := io.ReadAll(file)
	// Keep a line's worth of overlap so a message split by the read is found next time.
	if cut := bytes.LastIndexByte(data, '\n'); cut >= 0 {
		in.logOffset += int64(cut + 1)
		data = data[:cut+1]
	} else {
		data = nil
	}
	in.leading = bytes.Contains(bytes.ToLower(data), []byte("successfully acquired lease"))
	return in.leading
}

// servedThroughout reports whether some replica was ready at from and not killed before
// to: a webhook call in that window had a replica to answer it.
func (f *fleet) servedThroughout(from, to time.Time) bool {
	f.mu.Lock()
	runs := append([]*incarnation(nil), f.runs...)
	f.mu.Unlock()
	for _, in := range runs {
		in.mu.Lock()
		ok := !in.readyAt.IsZero() && !in.readyAt.After(from) && (in.killedAt.IsZero() || in.killedAt.After(to))
		select {
		case <-in.done:
			if in.killedAt.IsZero() {
				ok = false // exited on its own
			}
		default:
		}
		in.mu.Unlock()
		if ok {
			return true
		}
	}
	return false
}

// stopAll ends every replica with SIGTERM (SIGKILL after 20s) and the balancer.
func (f *fleet) stopAll() {
	f.mu.Lock()
	var ins []*incarnation
	for _, r := range f.slots {
		if r.cur != nil {
			ins = append(ins, r.cur)
			r.cur = nil
		}
	}
	f.mu.Unlock()
	for _, in := range ins {
		_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGTERM)
	}
	for _, in := range ins {
		select {
		case <-in.done:
		case <-time.After(20 * time.Second):
			_ = syscall.Kill(-in.cmd.Process.Pid, syscall.SIGKILL)
			<-in.done
		}
	}
	f.lb.close()
}

// unexpectedExits are processes that ended without being killed by the harness.
func (f *fleet) unexpectedExits() []string {
	f.mu.Lock()
	runs := append([]*incarnation(nil), f.runs...)
	f.mu.Unlock()
	var out []string
	for _, in := range runs {
		select {
		case <-in.done:
		default:
			continue
		}
		in.mu.Lock()
		if in.killedAt.IsZero() && in.exitErr != nil && !strings.Contains(in.exitErr.Error(), "terminated") {
			out = append(out, fmt.Sprintf("coalmine %d.%d exited: %v (log %s)", in.slot, in.n, in.exitErr, in.logPath))
		}
		in.mu.Unlock()
	}
	return out
}

func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
