package rollout

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/alerts"
	"github.com/coalmine-dev/coalmine/rollout/analysis"
)

// alertInbox is a local generic-webhook receiver: it keeps "severity: message" of each
// alert posted to it.
type alertInbox struct {
	*httptest.Server
	mu  sync.Mutex
	got []string
}

func newAlertInbox(t *testing.T) *alertInbox {
	t.Helper()
	in := &alertInbox{}
	in.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var p alerts.GenericPayload
		if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
			t.Errorf("alert body: %v", err)
		}
		in.mu.Lock()
		in.got = append(in.got, string(p.Severity)+": "+p.Message)
		in.mu.Unlock()
	}))
	t.Cleanup(in.Close)
	return in
}

// take returns the alerts received so far and forgets them.
func (in *alertInbox) take() []string {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := in.got
	in.got = nil
	return out
}

// setCanaryAlerts sets spec.analysis.alerts.
func setCanaryAlerts(t *testing.T, c *v1beta1.Canary, list []v1beta1.CanaryAlert) {
	t.Helper()
	c.Spec.Analysis.Alerts = list
}

func genericProvider(name, address string) *v1beta1.AlertProvider {
	return &v1beta1.AlertProvider{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec:       v1beta1.AlertProviderSpec{Type: v1beta1.AlertProviderGeneric, Address: address},
	}
}

// alertEnv is a loop whose alerts go through a Notifier the test can wait for.
func alertEnv(t *testing.T, c *v1beta1.Canary, extra ...client.Object) (*env, *alerts.Notifier, *scriptedHooks) {
	t.Helper()
	e := newEnv(t, append([]client.Object{c, targetDeployment()}, extra...)...)
	n := &alerts.Notifier{Client: e.r.Client}
	e.r.Alerts = n
	h := newScriptedHooks()
	e.r.Hooks = h
	return e, n, h
}

func assertAlerts(t *testing.T, step string, n *alerts.Notifier, in *alertInbox, want ...string) {
	t.Helper()
	n.Wait()
	if got := in.take(); !slices.Equal(got, want) {
		t.Errorf("%s: %s got %q, want %q", step, in.URL, got, want)
	}
}

func TestAlertsOnTransitionsAndSeverity(t *testing.T) {
	info, warn, errs := newAlertInbox(t), newAlertInbox(t), newAlertInbox(t)
	c := canaryWithHooks(v1beta1.CanaryWebhook{Name: "approval", Type: v1beta1.ConfirmRolloutHook, URL: "http://gate/"},
		v1beta1.CanaryWebhook{Name: "stop", Type: v1beta1.RollbackHook, URL: "http://stop/"})
	setCanaryAlerts(t, c, []v1beta1.CanaryAlert{
		{Name: "all", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "info"}}, // no severity: info
		{Name: "warnings", Severity: v1beta1.SeverityWarn, ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "warn"}},
		{Name: "errors", Severity: v1beta1.SeverityError, ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "error", Namespace: ns}},
	})
	e, n, h := alertEnv(t, c, genericProvider("info", info.URL), genericProvider("warn", warn.URL), genericProvider("error", errs.URL))
	h.set("stop", errClosed) // the rollback hook does not ask for a rollback
	all := func(step string, infoWant, warnWant, errWant []string) {
		t.Helper()
		assertAlerts(t, step, n, info, infoWant...)
		assertAlerts(t, step, n, warn, warnWant...)
		assertAlerts(t, step, n, errs, errWant...)
	}
	const (
		initialized = "info: New Deployment detected, initialization completed."
		newRevision = "info: New revision detected, progressing canary analysis."
		waiting     = "warn: Canary is waiting for approval."
		promoted    = "info: Canary analysis completed successfully, promotion finished."
		threshold   = "error: Failed checks threshold reached 5"
		manual      = "warn: Rolling back manual webhook invoked"
	)

	e.settle()
	all("initialize", []string{initialized}, nil, nil)

	// A closed confirm-rollout gate: one warning however long it waits.
	h.set("approval", errClosed)
	e.ship("alice:2")
	e.runUntil("Waiting", phaseIs(v1beta1.PhaseWaiting))
	e.clock.Step(e.canary().AnalysisInterval())
	e.settle()
	all("waiting", []string{waiting}, []string{waiting}, nil)

	// Open: the revision is analysed and promoted; advances send nothing (as Flagger).
	h.set("approval", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	all("promoted", []string{newRevision, promoted}, nil, nil)

	// Failed checks up to the threshold: one error.
	e.analyzer.fail = func(int) []analysis.Result { return failingSuccessRate() }
	e.ship("alice:3")
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	all("rolled back", []string{newRevision, threshold}, []string{threshold}, []string{threshold})

	// Re-applying the failed revision is refused without an alert.
	e.clock.Step(e.canary().AnalysisInterval())
	e.settle()
	all("refused", nil, nil, nil)

	// A rollback webhook asking to roll back: a warning, not an error (Flagger).
	e.analyzer.fail = nil
	e.ship("alice:4")
	e.runUntil("weight 5", weightIs(5))
	h.set("stop", nil)
	e.runUntil("Failed", phaseIs(v1beta1.PhaseFailed))
	all("manual rollback", []string{newRevision, manual}, []string{manual}, nil)
	if !strings.Contains(e.canary().Status.Message, "rollback requested by webhook stop") {
		t.Errorf("status %q", e.canary().Status.Message)
	}
}

func TestMuteAlert(t *testing.T) {
	in := newAlertInbox(t)
	c := canaryWithHooks(
		v1beta1.CanaryWebhook{Name: "quiet-gate", Type: v1beta1.ConfirmRolloutHook, URL: "http://gate/", MuteAlert: true},
		v1beta1.CanaryWebhook{Name: "loud-promotion", Type: v1beta1.ConfirmPromotionHook, URL: "http://promote/"},
	)
	// No spec.analysis.alerts: the global provider gets every alert (Flagger's --slack-url).
	e, n, h := alertEnv(t, c)
	n.Global = &alerts.Provider{Type: v1beta1.AlertProviderGeneric, Address: in.URL}
	e.settle()
	assertAlerts(t, "initialize", n, in, "info: New Deployment detected, initialization completed.")

	// The muted gate holds the revision without an alert.
	h.set("quiet-gate", errClosed)
	e.ship("alice:2")
	e.runUntil("Waiting", phaseIs(v1beta1.PhaseWaiting))
	if n := len(e.eventsWith(ReasonWaiting)); n != 1 {
		t.Errorf("%d waiting events: muteAlert mutes the alert, not the event", n)
	}
	assertAlerts(t, "muted confirm-rollout", n, in)

	// The confirm-promotion gate without muteAlert alerts once.
	h.set("quiet-gate", nil)
	h.set("loud-promotion", errClosed)
	e.runUntil("promotion waits", func(c *v1beta1.Canary) bool {
		return strings.Contains(c.Status.Message, "promotion waits for approval")
	})
	e.clock.Step(e.canary().AnalysisInterval())
	e.settle()
	assertAlerts(t, "confirm-promotion", n, in,
		"info: New revision detected, progressing canary analysis.",
		"warn: Canary promotion is waiting for approval.")

	// Muted the other way round.
	h.set("loud-promotion", nil)
	e.runUntil("Succeeded", phaseIs(v1beta1.PhaseSucceeded))
	assertAlerts(t, "promoted", n, in, "info: Canary analysis completed successfully, promotion finished.")
	if c := e.canary(); c.Spec.Analysis.Webhooks[1].MuteAlert {
		t.Fatal("test setup")
	}
	cur := e.canary()
	cur.Spec.Analysis.Webhooks[1].MuteAlert = true
	if err := e.base.Update(t.Context(), cur); err != nil {
		t.Fatal(err)
	}
	h.set("loud-promotion", errClosed)
	e.ship("alice:3")
	e.runUntil("promotion waits", func(c *v1beta1.Canary) bool {
		return strings.Contains(c.Status.Message, "promotion waits for approval")
	})
	assertAlerts(t, "muted confirm-promotion", n, in, "info: New revision detected, progressing canary analysis.")
}

func TestGlobalEventWebhook(t *testing.T) {
	c := seedCanary()
	e, n, h := alertEnv(t, c)
	n.EventWebhook = "http://events.example/"
	e.settle()
	deadline := 50
	for len(h.callsOf("events")) == 0 && deadline > 0 {
		deadline--
		waitABit()
	}
	calls := h.callsOf("events")
	if len(calls) == 0 || calls[0].Type != v1beta1.EventHook || calls[0].Metadata["eventMessage"] == "" {
		t.Fatalf("global event webhook calls %+v, want every event", calls)
	}

	// A Canary with its own event webhook: the global one is not called.
	c2 := canaryWithHooks(v1beta1.CanaryWebhook{Name: "own", Type: v1beta1.EventHook, URL: "http://own/"})
	e2, n2, h2 := alertEnv(t, c2)
	n2.EventWebhook = "http://events.example/"
	e2.settle()
	for len(h2.callsOf("own")) == 0 && deadline > 0 {
		deadline--
		waitABit()
	}
	if len(h2.callsOf("own")) == 0 || len(h2.callsOf("events")) != 0 {
		t.Errorf("own %d, global %d calls; want the Canary's own webhook only", len(h2.callsOf("own")), len(h2.callsOf("events")))
	}
}

// waitABit lets the background event webhook calls run.
func waitABit() { time.Sleep(20 * time.Millisecond) }
