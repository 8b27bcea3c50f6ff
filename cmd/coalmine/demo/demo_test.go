package demo

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// TestDemoScenario runs `make demo`'s story with short intervals on its own sandbox: the
// good release must be promoted, the bad one rolled back, and the picture written.
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
	var screen bytes.Buffer
	out, err := Run(ctx, Config{Interval: 2 * time.Second, Plain: true, OutDir: t.TempDir(), Out: &screen, Timeout: 4 * time.Minute})
	if err != nil {
		t.Fatalf("demo failed: %v\n%s", err, screen.String())
	}
	if !out.GoodPromoted || !out.BadRolledBack {
		t.Fatalf("outcome %+v, want good promoted and bad rolled back\n%s", out, screen.String())
	}
	if !strings.Contains(out.BadReason, "request-success-rate") {
		t.Errorf("rollback reason %q does not name the failing metric", out.BadReason)
	}
	fi, err := os.Stat(out.TimelinePath)
	if err != nil || fi.Size() == 0 {
		t.Fatalf("timeline picture missing or empty: %v", err)
	}
	for _, want := range []string{"good Succeeded", "bad  Failed", "promoted in", "rolled back in", "timeline:"} {
		if !strings.Contains(screen.String(), want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	t.Logf("good release promoted in %s, bad rolled back in %s", out.GoodDuration.Round(time.Second), out.BadDuration.Round(time.Second))
}
