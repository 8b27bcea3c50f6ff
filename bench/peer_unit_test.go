//go:build linux

package bench

import (
	"os"
	"strconv"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/equality"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// TestPeerCanarySameButAPIVersion: the two controllers get one Canary, only its apiVersion
// differs (the migration promise the benchmark leans on).
func TestPeerCanarySameButAPIVersion(t *testing.T) {
	f := peerCanary("ns", "app", flaggerVersion)
	c := peerCanary("ns", "app", v1beta1.GroupVersion.String())
	if f.GetAPIVersion() != flaggerVersion {
		t.Fatalf("apiVersion %s, want %s", f.GetAPIVersion(), flaggerVersion)
	}
	f.SetAPIVersion(c.GetAPIVersion())
	if !equality.Semantic.DeepEqual(f.Object, c.Object) {
		t.Errorf("Canaries differ beyond apiVersion:\n%v\n%v", f.Object, c.Object)
	}
	if got := c.Object["spec"].(map[string]any)["analysis"].(map[string]any)["interval"]; got != "10s" {
		t.Errorf("interval %v, want 10s", got)
	}
}

// TestProcCPU: /proc/<pid>/stat agrees with getrusage for this process.
func TestProcCPU(t *testing.T) {
	pid := strconv.Itoa(os.Getpid())
	before, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	r0 := cpuTime()
	for end := time.Now().Add(200 * time.Millisecond); time.Now().Before(end); {
	}
	after, err := procCPU(pid)
	if err != nil {
		t.Fatal(err)
	}
	got, want := after-before, cpuTime()-r0
	// Ticks are 10 ms; allow a few of them.
	if d := got - want; d < -50*time.Millisecond || d > 50*time.Millisecond {
		t.Errorf("/proc says %s, getrusage %s", got, want)
	}
}
