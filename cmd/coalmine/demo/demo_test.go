package demo

import (
	"bytes"
	"context"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// screen is the demo's output, written by Run while the test reads it.
type screen struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (s *screen) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.Write(p)
}

func (s *screen) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.buf.String()
}

var (
	progressLine = regexp.MustCompile(`^   (good|bad ) (\S+)\s+primary=\s*(\d+)% canary=\s*(\d+)% success=(\S+) p99=(\S+) failedChecks=(\d+)/5$`)
	lastReason   = regexp.MustCompile(`last: request-success-rate ([0-9.]+) < 99`)
)

// expectKumaParts checks what the demo says and saw of Kuma's control planes: real ones as
// root (unless the emulation is asked for), the notice otherwise.
func expectKumaParts(t *testing.T, out Outcome, text string) {
	t.Helper()
	wantReal := os.Geteuid() == 0 && os.Getenv(sandbox.KumaEmulateEnv) != "1"
	switch {
	case wantReal && !out.KumaReal:
		t.Errorf("running as root, the demo ran the emulated Global CP: %s", out.KumaWhy)
	case out.KumaReal:
		if want := "kuma-cp " + sandbox.KumaVersion + ": Global CP and zone CP"; !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
		if !slices.Equal(out.ZoneRouteWriters, []string{sandbox.KumaManager}) {
			t.Errorf("the zone's TrafficRoute was written by %v, want KDS (%s) alone", out.ZoneRouteWriters, sandbox.KumaManager)
		}
		t.Logf("real kuma-cp Global + zone; the parts started in %s, Kuma's control planes %s of it", out.StartUp.Round(10*time.Millisecond), out.KumaStartUp.Round(10*time.Millisecond))
	default:
		if out.KumaWhy == "" || !strings.Contains(text, "NOTICE: kuma-cp does not run") {
			t.Errorf("emulated Global CP without the notice (why: %q)", out.KumaWhy)
		}
	}
}

// TestDemoScenario runs `make demo`'s story with short intervals and --keep on its own
// sandbox: the good release must be promoted, the bad one rolled back, the picture
// written; each progress line must say something new; the success rate of the last line
// must be the value the rollback reason names; and once the story is told, the kept
// sandbox must stop within 3 s of the interrupt (what Ctrl-C or kill -INT does: the
// signal handler cancels the context). As root (make test in CI) it runs on real kuma-cp:
// the demo must say so, and the zone's TrafficRoute must be KDS's copy, written by kuma-cp
// alone; elsewhere it must print the emulation notice.
func TestDemoScenario(t *testing.T) {
	if testing.Short() {
		t.Skip("e2e: needs the sandbox")
	}
	logFile, err := os.Create(filepath.Join(t.TempDir(), "coalmine.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logFile.Close()
	ctrl.SetLogger(zap.New(zap.WriteTo(logFile)))
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var scr screen
	type result struct {
		out Outcome
		err error
	}
	done := make(chan result, 1)
	go func() {
		out, err := Run(ctx, Config{Interval: 2 * time.Second, Plain: true, Keep: true, OutDir: t.TempDir(), Out: &scr, Timeout: 4 * time.Minute})
		done <- result{out, err}
	}()
	var res result
	var interrupted time.Time
wait:
	for {
		select {
		case res = <-done:
			break wait
		case <-time.After(100 * time.Millisecond):
			if interrupted.IsZero() && strings.Contains(scr.String(), "== sandbox kept running") {
				interrupted = time.Now()
				cancel()
			}
		}
	}
	if interrupted.IsZero() {
		t.Fatalf("demo ended before keeping the sandbox: %v\n%s", res.err, scr.String())
	}
	if d := time.Since(interrupted); d > 3*time.Second {
		t.Errorf("the kept demo took %s to stop after the interrupt, want <= 3s", d.Round(10*time.Millisecond))
	}
	out, text := res.out, scr.String()
	if res.err != nil {
		t.Fatalf("demo failed: %v\n%s", res.err, text)
	}
	if !out.GoodPromoted || !out.BadRolledBack {
		t.Fatalf("outcome %+v, want good promoted and bad rolled back\n%s", out, text)
	}
	if !strings.Contains(out.BadReason, "request-success-rate") {
		t.Errorf("rollback reason %q does not name the failing metric", out.BadReason)
	}
	fi, err := os.Stat(out.TimelinePath)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("timeline picture missing or empty: %v", err)
	}
	for _, want := range []string{"good Succeeded", "bad  Failed", "promoted in", "rolled back in", "timeline:", "web view",
		"== what runs", "kube-apiserver v", "prometheus v", "--mesh-kubeconfig="} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	expectKumaParts(t, out, text)

	// Progress lines: none repeats the one before (a line only when something changed),
	// and the bad release's last one shows the value the analysis rolled back on.
	var prev, lastBad []string
	for _, l := range strings.Split(text, "\n") {
		m := progressLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		if prev != nil && strings.Join(prev[1:], "|") == strings.Join(m[1:], "|") {
			t.Errorf("line repeated with nothing changed: %q", l)
		}
		prev = m
		if m[1] == "bad " {
			lastBad = m
		}
	}
	if lastBad == nil || lastBad[2] != "Failed" {
		t.Fatalf("no final line for the bad release: %v\n%s", lastBad, text)
	}
	r := lastReason.FindStringSubmatch(out.BadReason)
	shown, err := strconv.ParseFloat(strings.TrimSuffix(lastBad[5], "%"), 64)
	if r == nil || err != nil {
		t.Fatalf("cannot compare the last line %q with the reason %q", lastBad[0], out.BadReason)
	}
	reason, _ := strconv.ParseFloat(r[1], 64)
	// The status keeps three decimals, the reason prints two: the same measurement.
	if math.Abs(shown-reason) > 0.0051 {
		t.Errorf("the last line shows success %v, the rollback reason %v: want the value the analysis used", shown, reason)
	}
	t.Logf("good release promoted in %s, bad rolled back in %s; stopped %s after the interrupt", out.GoodDuration.Round(time.Second),
		out.BadDuration.Round(time.Second), time.Since(interrupted).Round(10*time.Millisecond))
}
