package ctl

import (
	"bytes"
	"context"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// syncBuffer is a bytes.Buffer safe to read while the watch writes it.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Not on a terminal, --watch prints a line when what it shows changes, not on every event.
func TestWatchPrintsChangesOnly(t *testing.T) {
	c := aliceProgressing()
	cl := fakeCluster(t, c)
	var out syncBuffer
	v := statusView{cl: cl, namespace: c.Namespace, name: c.Name, io: IO{Out: &out, Err: &out}, now: func() time.Time { return now }}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- v.watch(ctx) }()

	lines := func() []string {
		if s := strings.TrimSpace(out.String()); s != "" {
			return strings.Split(s, "\n")
		}
		return nil
	}
	waitLines := func(n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for len(lines()) < n && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if got := lines(); len(got) < n {
			t.Fatalf("%d lines, want %d:\n%s", len(got), n, out.String())
		}
	}
	update := func(edit func(*v1beta1.Canary)) {
		t.Helper()
		cur := &v1beta1.Canary{}
		if err := cl.Get(ctx, client.ObjectKeyFromObject(c), cur); err != nil {
			t.Fatal(err)
		}
		edit(cur)
		if err := cl.Update(ctx, cur); err != nil {
			t.Fatal(err)
		}
	}
	waitLines(1)
	update(func(c *v1beta1.Canary) { c.Labels = map[string]string{"team": "a"} }) // nothing shown changes
	update(func(c *v1beta1.Canary) { c.Status.CanaryWeight = 20 })
	waitLines(2)
	update(func(c *v1beta1.Canary) { c.Status.Phase = v1beta1.PhasePromoting })
	waitLines(3)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("watch: %v", err)
	}
	got := lines()
	if len(got) != 3 || !strings.HasPrefix(got[0], "12:00:00 apps-a-mesh-a/alice Progressing weight=15%") ||
		!strings.Contains(got[1], "Progressing weight=20%") || !strings.Contains(got[2], "Promoting weight=20%") {
		t.Errorf("lines:\n%s", strings.Join(got, "\n"))
	}
}

// On a terminal --watch redraws in place: the second frame moves the cursor back over the
// first, clears each rewritten line and what is left below.
func TestWatchRedrawsInPlaceOnATerminal(t *testing.T) {
	c := aliceProgressing()
	v := statusView{namespace: c.Namespace, name: c.Name, io: IO{Terminal: true}, now: func() time.Time { return now }}
	var out bytes.Buffer
	s := &screen{w: &out, title: v.title}
	items := map[string]v1beta1.Canary{key(c): *c}
	s.show(items, &v)
	first := out.String()
	if strings.Contains(first, "\x1b[") && strings.Index(first, "\x1b[") < strings.Index(first, "Canaries in") {
		t.Errorf("the first frame moves the cursor before drawing: %q", first)
	}
	if !strings.HasPrefix(first, "Canaries in apps-a-mesh-a/alice at 12:00:00 (watching; Ctrl-C to stop)\x1b[K\n") {
		t.Errorf("first frame starts %q", first[:min(len(first), 80)])
	}
	lines := strings.Count(first, "\n")
	out.Reset()
	s.show(items, &v)
	if second := out.String(); !strings.HasPrefix(second, "\x1b["+strconv.Itoa(lines)+"A\r") || !strings.HasSuffix(second, "\x1b[J") {
		t.Errorf("second frame %q, want it to go %d lines up first and clear below last", second, lines)
	}
}
