package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// command sets coalmine.dev/command as `coalmine <cmd>` does, with the requester the
// Canary webhook would stamp ("" leaves the stamp out: the webhook was not called).
func (e *env) command(cmd, by string) {
	e.t.Helper()
	c := e.canary()
	if c.Annotations == nil {
		c.Annotations = map[string]string{}
	}
	c.Annotations[v1beta1.AnnotationCommand] = cmd
	if by != "" {
		c.Annotations[v1beta1.AnnotationCommandBy] = by
	}
	if err := e.base.Update(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
}

// expectCommandConsumed: the annotations are gone and one event names the requester.
func (e *env) expectCommandConsumed(reason, who string) {
	e.t.Helper()
	c := e.canary()
	if _, ok := c.Annotations[v1beta1.AnnotationCommand]; ok {
		e.t.Errorf("command annotation left: %v", c.Annotations)
	}
	if _, ok := c.Annotations[v1beta1.AnnotationCommandBy]; ok {
		e.t.Errorf("command-by annotation left: %v", c.Annotations)
	}
	found := false
	for _, n := range e.eventsWith(reason) {
		found = found || strings.Contains(n, who)
	}
	if !found {
		e.t.Errorf("no %s event naming %s: %v", reason, who, e.notes)
	}
}

func TestOperatorCommands(t *testing.T) {
	const who = "jane@example.com"
	progressing := func(t *testing.T) *env {
		e := newEnv(t, seedCanary(), targetDeployment())
		e.settle()
		e.ship("alice:2")
		e.runUntil("weight 10", weightIs(10))
		return e
	}
	t.Run("promote skips the remaining steps", func(t *testing.T) {
		e := progressing(t)
		e.command(v1beta1.CommandPromote, who)
		e.settle()
		if p := e.phase(); p != v1beta1.PhasePromoting && p != v1beta1.PhaseSucceeded {
			t.Fatalf("phase %s after promote", p)
		}
		e.expectCommandConsumed(ReasonCommand, who)
		e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
		if got := distinct(e.router.history); got[len(got)-1] != 0 || len(got) != 4 {
			t.Errorf("weights %v: want 0, 5, 10 then back to 0", got)
		}
	})
	t.Run("abort rolls back now", func(t *testing.T) {
		e := progressing(t)
		e.command(v1beta1.CommandAbort, who)
		e.settle()
		c := e.canary()
		if c.Status.Phase != v1beta1.PhaseFailed || !strings.Contains(c.Status.Message, "aborted by "+who) {
			t.Fatalf("after abort: %s %q", c.Status.Phase, c.Status.Message)
		}
		if w, _ := e.router.weight("alice"); w != 0 {
			t.Errorf("route weight %d", w)
		}
		if _, ok := e.deployment("alice-canary"); ok {
			t.Error("canary Deployment left")
		}
		if !e.target().Spec.Paused {
			t.Error("target unpaused after abort")
		}
		e.expectCommandConsumed(ReasonCommand, who)
	})
	t.Run("retry analyses the failed revision again", func(t *testing.T) {
		e := progressing(t)
		e.command(v1beta1.CommandAbort, who)
		e.settle()
		e.command(v1beta1.CommandRetry, who)
		e.settle()
		c := e.canary()
		if c.Status.Phase != v1beta1.PhaseProgressing || c.Status.FailedRevision != "" || c.Status.FailedChecks != 0 {
			t.Fatalf("after retry: %+v", c.Status)
		}
		e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	})
	t.Run("pause holds the weight across intervals, resume goes on", func(t *testing.T) {
		e := progressing(t)
		e.command(v1beta1.CommandPause, who)
		e.settle()
		e.expectCommandConsumed(ReasonCommand, who)
		cond := meta.FindStatusCondition(e.canary().Status.Conditions, ConditionPaused)
		if cond == nil || cond.Status != "True" || !strings.Contains(cond.Message, who) || !strings.Contains(cond.Message, "coalmine resume") {
			t.Fatalf("Paused condition %+v", cond)
		}
		calls := e.analyzer.calls
		for range 5 {
			e.clock.Step(30 * time.Second)
			e.settle()
		}
		if c := e.canary(); c.Status.CanaryWeight != 10 || e.analyzer.calls != calls {
			t.Fatalf("paused: weight %d, %d analyses ran", c.Status.CanaryWeight, e.analyzer.calls-calls)
		}
		e.command(v1beta1.CommandResume, who)
		e.settle()
		if meta.IsStatusConditionTrue(e.canary().Status.Conditions, ConditionPaused) {
			t.Fatal("still paused after resume")
		}
		e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	})
	t.Run("a command that does not apply is refused and removed", func(t *testing.T) {
		e := newEnv(t, seedCanary(), targetDeployment())
		e.settle()
		e.command(v1beta1.CommandAbort, who)
		e.settle()
		if e.phase() != v1beta1.PhaseInitialized {
			t.Fatalf("phase %s", e.phase())
		}
		e.expectCommandConsumed(ReasonCommandRefused, who)
	})
	t.Run("an unstamped command names no one", func(t *testing.T) {
		e := progressing(t)
		e.command(v1beta1.CommandPause, "")
		e.settle()
		e.expectCommandConsumed(ReasonCommand, "an unknown user")
	})
}
