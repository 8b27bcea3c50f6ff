package rollout

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/alerts"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
)

// Alert texts, Flagger's, so routing rules and habits built on them carry over.
const (
	alertInitialized      = "New %s detected, initialization completed."
	alertNewRevision      = "New revision detected, progressing canary analysis."
	alertWaiting          = "Canary is waiting for approval."
	alertWaitingPromotion = "Canary promotion is waiting for approval."
	alertPromoted         = "Canary analysis completed successfully, promotion finished."
	alertSkipped          = "Canary analysis was skipped, promotion finished."
	alertManualRollback   = "Rolling back manual webhook invoked"
	alertThreshold        = "Failed checks threshold reached %d"
	alertDeadline         = "Progress deadline exceeded: %s"
	alertRolledBack       = "Rolling back: %s"
)

// sendAlerts turns the events of a pass whose status is written into alerts, on the
// transitions Flagger alerts on, and sends them in the background to the Canary's
// spec.analysis.alerts (or the global provider); it also sends every event to the global
// --event-webhook when the Canary has no event webhook of its own. It never blocks.
func (x *pass) sendAlerts(ctx context.Context) {
	n := x.r.Alerts
	if n == nil {
		n = &alerts.Notifier{Client: x.r.Client}
	}
	x.sendGlobalEvents(ctx, n.EventWebhook)
	list := canaryAlerts(x.canary)
	for _, e := range x.events {
		if a, ok := x.alertOf(e); ok {
			n.Send(ctx, x.canary.Namespace, list, a)
		}
	}
}

// alertOf is the alert of one event, if Flagger sends one for that transition.
func (x *pass) alertOf(e pendingEvent) (alerts.Alert, bool) {
	a := alerts.Alert{
		Canary: x.canary.Name, Namespace: x.canary.Namespace,
		Phase: x.status.Phase, Revision: x.status.CanaryRevision,
	}
	switch e.reason {
	case ReasonInitialized:
		a.Severity, a.Message, a.Fields = v1beta1.SeverityInfo, fmt.Sprintf(alertInitialized, x.targetKind()), x.alertMetadata()
	case ReasonNewRevision, ReasonRevisionReplace:
		// Flagger detects a newer revision mid-analysis as a new revision too.
		a.Severity, a.Message, a.Fields = v1beta1.SeverityInfo, alertNewRevision, x.alertMetadata()
	case ReasonWaiting:
		if x.gateMuted(e.note) {
			return a, false
		}
		a.Severity, a.Message = v1beta1.SeverityWarn, alertWaiting
		if e.action == "Promote" {
			a.Message = alertWaitingPromotion
		}
	case ReasonSucceeded:
		a.Severity, a.Message = v1beta1.SeverityInfo, alertPromoted
		if x.canary.Spec.SkipAnalysis {
			a.Message = alertSkipped
		}
	case ReasonRolledBack:
		// A re-applied failed revision is refused with the same reason but is no rollback
		// (nothing was analysed): only a pass that ended a revision alerts.
		if !x.postRollout || x.status.Phase != v1beta1.PhaseFailed {
			return a, false
		}
		why := rollbackReason(e.note)
		switch {
		case strings.Contains(why, "rollback requested by webhook"):
			a.Severity, a.Message = v1beta1.SeverityWarn, alertManualRollback
		case x.status.FailedChecks >= x.canary.Threshold():
			a.Severity, a.Message = v1beta1.SeverityError, fmt.Sprintf(alertThreshold, x.status.FailedChecks)
		case strings.Contains(why, "progress deadline") || strings.Contains(why, "ProgressDeadlineExceeded"):
			a.Severity, a.Message = v1beta1.SeverityError, fmt.Sprintf(alertDeadline, why)
		default:
			a.Severity, a.Message = v1beta1.SeverityError, fmt.Sprintf(alertRolledBack, why)
		}
	default:
		return a, false
	}
	return a, true
}

// gateMuted: the gate whose closing the waiting event reports has muteAlert set. The
// event names the gate as hookError does ("confirm-rollout webhook approval: ...").
func (x *pass) gateMuted(note string) bool {
	if x.canary.Spec.Analysis == nil {
		return false
	}
	for i := range x.canary.Spec.Analysis.Webhooks {
		h := &x.canary.Spec.Analysis.Webhooks[i]
		if h.MuteAlert && strings.Contains(note, fmt.Sprintf("%s webhook %s:", hooks.TypeOf(h), h.Name)) {
			return true
		}
	}
	return false
}

// rollbackReason is the reason part of the rollback event's note ("Canary failed, revision
// r rolled back: <reason>. Deployment ..."), or the whole note.
func rollbackReason(note string) string {
	_, rest, ok := strings.Cut(note, " rolled back: ")
	if !ok {
		return note
	}
	if i := strings.LastIndex(rest, ". Deployment "); i >= 0 {
		rest = rest[:i]
	}
	return rest
}

func (x *pass) targetKind() string {
	if k := x.canary.Spec.TargetRef.Kind; k != "" {
		return k
	}
	return "Deployment"
}

// alertMetadata are the fields Flagger adds to the alerts of a new revision: the target,
// the threshold, the progress deadline and how traffic is routed.
func (x *pass) alertMetadata() []alerts.Field {
	c := x.canary
	fields := []alerts.Field{
		{Name: "Target", Value: fmt.Sprintf("%s/%s.%s", x.targetKind(), c.Spec.TargetRef.Name, c.Namespace)},
		{Name: "Failed checks threshold", Value: strconv.Itoa(c.Threshold())},
		{Name: "Progress deadline", Value: fmt.Sprintf("%ds", int(c.ProgressDeadline().Seconds()))},
	}
	a := c.Spec.Analysis
	if a == nil {
		return fields
	}
	switch {
	case a.StepWeight > 0:
		fields = append(fields, alerts.Field{Name: "Traffic routing", Value: fmt.Sprintf("Weight step: %d max: %d", a.StepWeight, c.MaxWeight())})
	case len(a.StepWeights) > 0:
		steps := make([]string, len(a.StepWeights))
		for i, w := range a.StepWeights {
			steps[i] = strconv.Itoa(w)
		}
		fields = append(fields, alerts.Field{Name: "Traffic routing", Value: fmt.Sprintf("Weight steps: %s max: %d", strings.Join(steps, ","), c.MaxWeight())})
	case a.Iterations > 0:
		fields = append(fields, alerts.Field{Name: "Traffic routing", Value: "Blue/Green"})
	}
	return fields
}

// sendGlobalEvents posts every event of the pass to the --event-webhook address, as an
// event webhook (Flagger: only for Canaries without an event webhook of their own), in the
// background.
func (x *pass) sendGlobalEvents(ctx context.Context, url string) {
	if url == "" || len(x.events) == 0 || len(hooks.Of(x.canary, v1beta1.EventHook)) > 0 {
		return
	}
	h := &v1beta1.CanaryWebhook{Name: "events", Type: v1beta1.EventHook, URL: url}
	ctx = context.WithoutCancel(ctx)
	caller, logger := x.hooks(), log.FromContext(ctx)
	for _, e := range x.events {
		p := x.payload()
		p.Metadata = map[string]string{"eventMessage": e.note, "eventType": e.typ}
		go func() {
			if err := caller.Call(ctx, h, p); err != nil {
				logger.Info("global event webhook failed", "error", err.Error())
			}
		}()
	}
}

// canaryAlerts is spec.analysis.alerts.
func canaryAlerts(c *v1beta1.Canary) []v1beta1.CanaryAlert {
	if c.Spec.Analysis == nil {
		return nil
	}
	return c.Spec.Analysis.Alerts
}
