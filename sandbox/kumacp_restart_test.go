package sandbox

import (
	"io"
	"os/exec"
	"testing"
	"time"
)

// TestCrashedKumaCPIsStartedAgain: a kuma-cp that exits on its own is started again with
// the same command; one that is stopped is not.
func TestCrashedKumaCPIsStartedAgain(t *testing.T) {
	dir := t.TempDir()
	crashing, err := startCommand("kuma-cp-test", dir, exec.Command("/bin/sh", "-c", "exit 3"))
	if err != nil {
		t.Fatal(err)
	}
	c := &KumaCP{Mode: "global", proc: crashing}
	starts := 0
	go c.supervise(func() (*process, error) {
		starts++
		return startCommand("kuma-cp-test", dir, exec.Command("sleep", "30"))
	}, io.Discard)

	deadline := time.Now().Add(10 * time.Second)
	for c.current() == crashing && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if c.current() == crashing {
		t.Fatal("the crashed kuma-cp was not started again within 10s")
	}
	if err := c.stop(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * kumaRestartDelay)
	c.mu.Lock()
	defer c.mu.Unlock()
	if starts != 1 || c.Restarts != 1 {
		t.Errorf("%d starts, %d restarts after a crash and a stop, want 1 and 1", starts, c.Restarts)
	}
}
