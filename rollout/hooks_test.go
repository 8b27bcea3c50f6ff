package rollout

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
)

// scriptedHooks answers webhook calls by hook name (nil: 2xx) and records them.
type scriptedHooks struct {
	mu     sync.Mutex
	closed map[string]error // hooks answering an error until reopened
	calls  []hooks.Payload  // Type and Metadata as sent, Name is the hook's
}

func newScriptedHooks() *scriptedHooks { return &scriptedHooks{closed: map[string]error{}} }

func (s *scriptedHooks) Call(_ context.Context, h *v1beta1.CanaryWebhook, p hooks.Payload) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p.Type = h.Type
	p.Name = h.Name
	s.calls = append(s.calls, p)
	return s.closed[h.Name]
}

func (s *scriptedHooks) set(name string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		delete(s.closed, name)
		return
	}
	s.closed[name] = err
}

func (s *scriptedHooks) callsOf(name string) []hooks.Payload {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []hooks.Payload
	for _, c := range s.calls {
		if c.Name == name {
			out = append(out, c)
		}
	}
	return out
}

func canaryWithHooks(hs ...v1beta1.CanaryWebhook) *v1beta1.Canary {
	c := seedCanary()
	c.Spec.Analysis.Webhooks = hs
	return c
}

func hookEnv(t *testing.T, c *v1beta1.Canary) (*env, *scriptedHooks) {
	t.Helper()
	e := newEnv(t, c, targetDeployment())
	h := newScriptedHooks()
	e.r.Hooks = h
	e.settle()
	return e, h
}

var errClosed = errors.New("answered 403 Forbidden: not yet")

func TestConfirmRolloutGateWaits(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "approval", Type: v1beta1.ConfirmRolloutHook, URL: "http://gate/"}))
	h.set("approval", errClosed)
	rev := e.ship("alice:2")
	for range 3 {
		e.runUntil("Waiting", phaseIs(v1beta1.PhaseWaiting))
		e.clock.Step(30 * time.Second)
	}
	c := e.canary()
	if !strings.Contains(c.Status.Message, "waits for approval: confirm-rollout webhook approval: answered 403 Forbidden: not yet") || c.Status.CanaryRevision != rev {
		t.Errorf("status while waiting: %+v", c.Status)
	}
	if _, ok := e.deployment("alice-canary"); ok {
		t.Error("canary Deployment created before the gate opened")
	}
	if n := len(e.eventsWith(ReasonWaiting)); n != 1 {
		t.Errorf("%d waiting events, want 1 however long it waits", n)
	}
	if calls := h.callsOf("approval"); len(calls) < 3 || calls[0].Checksum != rev {
		t.Errorf("gate calls %+v, want one per interval with the new revision", calls)
	}

	h.set("approval", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if got := e.canary().Status.LastPromotedRevision; got != rev {
		t.Errorf("promoted %s, want %s", got, rev)
	}
}

func TestPreRolloutHookFailuresRollBack(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "smoke", Type: v1beta1.PreRolloutHook, URL: "http://smoke/"}))
	h.set("smoke", errors.New("answered 500 Internal Server Error: /healthz failed"))
	e.ship("alice:2")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	c := e.canary()
	if c.Status.FailedChecks != 5 || !strings.Contains(c.Status.Message, "pre-rollout webhook smoke") {
		t.Errorf("status %+v", c.Status)
	}
	if slices.ContainsFunc(e.router.history, func(w int) bool { return w > 0 }) {
		t.Errorf("the canary got traffic before its pre-rollout hook passed: weights %v", e.router.history)
	}
}

func TestRolloutHookFailureIsAFailedCheck(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "load", URL: "http://loadtester/"}))
	e.ship("alice:2")
	e.runUntil("weight 10", weightIs(10))
	h.set("load", errors.New("answered 502 Bad Gateway"))
	e.clock.Step(30 * time.Second)
	e.settle()
	if c := e.canary(); c.Status.FailedChecks != 1 || c.Status.CanaryWeight != 10 {
		t.Errorf("after a failed rollout hook: %+v", c.Status)
	}
	h.set("load", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if got := h.callsOf("load"); len(got) < 9 || got[0].Type != "" && got[0].Type != v1beta1.RolloutHook {
		t.Errorf("load hook calls %+v", got)
	}
}

func TestConfirmPromotionGateHoldsAtMaxWeight(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "promote?", Type: v1beta1.ConfirmPromotionHook, URL: "http://gate/"}))
	h.set("promote?", errClosed)
	e.ship("alice:2")
	e.runUntil("weight 50", weightIs(50))
	for range 3 {
		e.clock.Step(30 * time.Second)
		e.settle()
	}
	c := e.canary()
	if c.Status.Phase != v1beta1.PhaseWaitingPromotion || c.Status.CanaryWeight != 50 || !strings.Contains(c.Status.Message, "promotion waits for approval") {
		t.Fatalf("while the promotion gate is closed: %+v", c.Status)
	}
	iterations := c.Status.Iterations
	if !e.target().Spec.Paused {
		t.Error("target unpaused before the promotion gate opened")
	}
	h.set("promote?", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	if iterations < 12 {
		t.Errorf("%d iterations: the analysis should go on while the gate is closed", iterations)
	}
}

func TestRollbackHookRollsBack(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(v1beta1.CanaryWebhook{Name: "abort", Type: v1beta1.RollbackHook, URL: "http://abort/"}))
	h.set("abort", errClosed) // closed: nobody asked to roll back
	e.ship("alice:2")
	e.runUntil("weight 15", weightIs(15))
	h.set("abort", nil)
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	if c := e.canary(); !strings.Contains(c.Status.Message, "rollback requested by webhook abort") || c.Status.FailedChecks != 0 {
		t.Errorf("status %+v", c.Status)
	}
}

func TestPostRolloutAndEventHooks(t *testing.T) {
	e, h := hookEnv(t, canaryWithHooks(
		v1beta1.CanaryWebhook{Name: "notify", Type: v1beta1.PostRolloutHook, URL: "http://notify/"},
		v1beta1.CanaryWebhook{Name: "events", Type: v1beta1.EventHook, URL: "http://events/"},
	))
	e.ship("alice:2")
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	post := h.callsOf("notify")
	if len(post) != 1 || post[0].Phase != v1beta1.PhaseSucceeded {
		t.Errorf("post-rollout calls %+v, want one, Succeeded", post)
	}
	// Event hooks are called in the background.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var succeeded bool
		for _, c := range h.callsOf("events") {
			succeeded = succeeded || strings.HasPrefix(c.Metadata["eventMessage"], "Promotion completed") && c.Metadata["eventType"] == "Normal"
		}
		if succeeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no event hook call for the promotion; calls %+v", h.callsOf("events"))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
