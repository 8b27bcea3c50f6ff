package sandbox

import (
	"fmt"
	"io"
	"time"
)

// kumaRestartDelay is how long a crashed kuma-cp stays down before it is started again.
const kumaRestartDelay = time.Second

// supervise starts kuma-cp again whenever it exits without being stopped, on the same
// ports and configuration, as the kubelet restarts a control plane's crashed container.
// kuma-cp 1.8.1's Global CP panics on an informer tombstone (an object deleted while its
// watch was down, as after its API server's outage); without a restart every later route
// write on the Global CP fails for good, which no cluster would do (found by make test's
// chaos run at stop 23).
func (c *KumaCP) supervise(restart func() (*process, error), log io.Writer) {
	for {
		c.mu.Lock()
		p := c.proc
		c.mu.Unlock()
		<-p.done
		for {
			time.Sleep(kumaRestartDelay)
			c.mu.Lock()
			if c.stopping {
				c.mu.Unlock()
				return
			}
			next, err := restart()
			if err == nil {
				c.proc = next
				c.Restarts++
			}
			c.mu.Unlock()
			if err != nil {
				fmt.Fprintf(log, "sandbox: kuma-cp %s CP exited (%v) and did not start again: %v; retrying\n", c.Mode, p.waitErr, err)
				continue
			}
			fmt.Fprintf(log, "sandbox: kuma-cp %s CP exited (%v); started again (pid %d), as its Deployment would\n",
				c.Mode, p.waitErr, next.cmd.Process.Pid)
			break
		}
	}
}

// current is the running kuma-cp process (the last one started).
func (c *KumaCP) current() *process {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.proc
}
