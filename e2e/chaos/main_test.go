// Package chaos runs coalmine as its own process against the sandbox while it is killed
// with SIGKILL at seeded random moments, Prometheus and the Global control plane's
// apiserver are cut in windows, and a competing writer edits Canaries; an observer with
// its own watches judges invariants I1-I5 (issue 11, DESIGN §7 "make chaos").
//
// TestChaosShort runs in `make test`; TestChaos (COALMINE_CHAOS_FULL=1) is `make chaos`.
// CHAOS_SEED=<n> replays a run's plan: the same apps, releases, kill and outage schedule
// (the interleaving with the machine's timing differs).
package chaos

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
)

// summaries are the reports of the runs of this process, printed after every test, so
// the last line printed is a run's `chaos: ...` line.
var summaries struct {
	sync.Mutex
	text []string
}

func addSummary(s string) {
	summaries.Lock()
	defer summaries.Unlock()
	summaries.text = append(summaries.text, s)
}

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		fmt.Println("chaos: skipped in -short mode (it needs the sandbox)")
		os.Exit(0)
	}
	code := m.Run()
	summaries.Lock()
	out := strings.Join(summaries.text, "\n")
	summaries.Unlock()
	if out != "" {
		fmt.Println(out)
	}
	os.Exit(code)
}
