package rollout

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/rollout/hooks"
)

// ReasonHookFailed: a webhook of spec.analysis.webhooks failed.
const ReasonHookFailed = "WebhookFailed"

// emit calls the post-rollout hooks and sends the events (to the API and to the event
// hooks) and metrics of a pass whose status is written.
func (x *pass) emit(ctx context.Context) {
	if x.postRollout {
		for _, h := range hooks.Of(x.canary, v1beta1.PostRolloutHook) {
			if err := x.hooks().Call(ctx, h, x.payload()); err != nil {
				x.event(corev1.EventTypeWarning, ReasonHookFailed, "PostRollout", "%s", hookError(h, err))
			}
		}
	}
	if x.r.Recorder != nil {
		for _, e := range x.events {
			x.r.Recorder.Eventf(x.canary, nil, e.typ, e.reason, e.action, "%s", e.note)
		}
	}
	x.sendEventHooks(ctx)
	x.sendAlerts(ctx)
	recordStatus(x.canary, x.status)
	x.recordAnalysis()
}

// sendEventHooks sends each event of the pass to the event hooks, in the background: a
// slow receiver must not hold the loop. Each call has the hook's own timeout.
func (x *pass) sendEventHooks(ctx context.Context) {
	evHooks := hooks.Of(x.canary, v1beta1.EventHook)
	if len(evHooks) == 0 || len(x.events) == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	caller, logger := x.hooks(), log.FromContext(ctx)
	for _, e := range x.events {
		p := x.payload()
		p.Metadata = map[string]string{"eventMessage": e.note, "eventType": e.typ}
		for _, h := range evHooks {
			go func() {
				if err := caller.Call(ctx, h, p); err != nil {
					logger.Info("event webhook failed", "webhook", h.Name, "error", err.Error())
				}
			}()
		}
	}
}

// hooks is the webhook caller.
func (x *pass) hooks() hooks.Caller {
	if x.r.Hooks != nil {
		return x.r.Hooks
	}
	return defaultHooks
}

var defaultHooks = &hooks.HTTP{}

// payload is what the webhooks of this pass receive.
func (x *pass) payload() hooks.Payload {
	return hooks.Payload{Name: x.canary.Name, Namespace: x.canary.Namespace, Phase: x.status.Phase, Checksum: x.status.CanaryRevision}
}

// gateClosed calls the gates of type t (confirm-rollout, confirm-promotion) in order and
// says why the first one that did not answer 2xx is closed; "" when all are open.
func (x *pass) gateClosed(ctx context.Context, t v1beta1.HookType, rev string) string {
	p := x.payload()
	p.Checksum = rev
	for _, h := range hooks.Of(x.canary, t) {
		if err := x.hooks().Call(ctx, h, p); err != nil {
			return hookError(h, err)
		}
	}
	return ""
}

// failedHooks calls the hooks of type t (pre-rollout, rollout) and describes each that
// failed: each is a failed check.
func (x *pass) failedHooks(ctx context.Context, t v1beta1.HookType) []string {
	var failed []string
	for _, h := range hooks.Of(x.canary, t) {
		if err := x.hooks().Call(ctx, h, x.payload()); err != nil {
			failed = append(failed, hookError(h, err))
		}
	}
	return failed
}

// hookError names the hook that failed: "pre-rollout webhook smoke: ... answered 500".
func hookError(h *v1beta1.CanaryWebhook, err error) string {
	return fmt.Sprintf("%s webhook %s: %v", hooks.TypeOf(h), h.Name, err)
}

// rollbackRequested calls the rollback hooks: the name of the first that answers 2xx
// (a person or a system asked to roll back), or "".
func (x *pass) rollbackRequested(ctx context.Context) string {
	for _, h := range hooks.Of(x.canary, v1beta1.RollbackHook) {
		if x.hooks().Call(ctx, h, x.payload()) == nil {
			return h.Name
		}
	}
	return ""
}
