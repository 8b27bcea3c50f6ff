package sandbox

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// clockTicks is the kernel's USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100 on
// every Linux ABI Go runs on (sysconf(_SC_CLK_TCK) has no syscall behind it).
const clockTicks = 100

// APIServerCPU is the CPU time (user and system) the sandbox's kube-apiserver used so
// far, read from /proc (Linux only). make bench reports the apiserver's share of a
// rollout with it: what coalmine's requests cost the cluster, which its own CPU figure
// does not show (a merge patch costs the apiserver more than an update of the same
// status, a larger status costs every write and every watcher).
func (s *Sandbox) APIServerCPU() (time.Duration, error) {
	pid, err := s.apiserverPID()
	if err != nil {
		return 0, err
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, fmt.Errorf("read kube-apiserver CPU time: %w", err)
	}
	t, err := cpuFromStat(data)
	if err != nil {
		return 0, fmt.Errorf("read kube-apiserver CPU time from /proc/%d/stat: %w", pid, err)
	}
	return t, nil
}

// cpuFromStat is utime + stime of a /proc/<pid>/stat line.
func cpuFromStat(data []byte) (time.Duration, error) {
	// The command name (field 2) is in parentheses and may hold spaces and parentheses:
	// count the fields after its last closing one.
	rest := string(data)
	i := strings.LastIndexByte(rest, ')')
	if i < 0 {
		return 0, errors.New("no command name in parentheses")
	}
	f := strings.Fields(rest[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, v := range f[11:13] { // utime and stime, fields 14 and 15 of the line
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CPU ticks: %w", err)
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// apiserverPID is the running apiserver's pid: the one StartAPIServer restarted, else
// envtest's, found by its port.
func (s *Sandbox) apiserverPID() (int, error) {
	restartedAPIServers.Lock()
	st := restartedAPIServers.m[s]
	restarted, pid := st != nil, 0
	if restarted {
		pid = st.pid
	}
	restartedAPIServers.Unlock()
	if restarted {
		if pid == 0 {
			return 0, errors.New("kube-apiserver is stopped")
		}
		return pid, nil
	}
	port, err := s.apiserverPort()
	if err != nil {
		return 0, err
	}
	found, _, err := findAPIServer(port)
	return found, err
}
