package rollout

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// ConditionPaused is True while an operator holds the analysis (coalmine pause).
const ConditionPaused = "Paused"

// Event reasons of the operator commands.
const (
	ReasonCommand        = "OperatorCommand"
	ReasonCommandRefused = "OperatorCommandRefused"
)

// requester is who set the command, as coalmine's Canary webhook stamped it from the
// authenticated request. Without the stamp (the webhook fails open) it says so rather
// than trust any text.
func (x *pass) requester() string {
	if by := x.canary.Annotations[v1beta1.AnnotationCommandBy]; by != "" {
		return by
	}
	return "an unknown user (coalmine's Canary webhook did not stamp " + v1beta1.AnnotationCommandBy + ")"
}

func (x *pass) command() string { return x.canary.Annotations[v1beta1.AnnotationCommand] }

// commandPromote skips the remaining steps (or the gate, or a failed verdict) and promotes
// the live revision now.
func (x *pass) commandPromote() {
	live := x.revision()
	x.event(corev1.EventTypeNormal, ReasonCommand, "Promote", "Promotion of revision %s requested by %s", live, x.requester())
	if x.status.CanaryRevision != live {
		x.status.CanaryRevision = live
	}
	x.status.FailedRevision = ""
	x.clearPause()
	x.startPromotion(fmt.Sprintf("promoted by %s", x.requester()))
}

// commandAbort rolls the revision back now.
func (x *pass) commandAbort() {
	x.event(corev1.EventTypeWarning, ReasonCommand, "Rollback", "Rollback of revision %s requested by %s", x.status.CanaryRevision, x.requester())
	x.clearPause()
	x.rollback(fmt.Sprintf("aborted by %s", x.requester()))
}

// commandRetry analyses the failed revision again from the first step.
func (x *pass) commandRetry() {
	live := x.revision()
	if live != x.status.FailedRevision {
		x.commandRefused(fmt.Sprintf("revision %s is not the failed revision %s", live, x.status.FailedRevision))
		return
	}
	x.event(corev1.EventTypeNormal, ReasonCommand, "Analyse", "Retry of revision %s requested by %s", live, x.requester())
	x.status.FailedRevision = ""
	x.start()
}

// commandPause holds the analysis at the current weight until resume.
func (x *pass) commandPause() {
	msg := fmt.Sprintf("paused by %s at canary weight %d%% since %s; resume with `coalmine resume -n %s %s`",
		x.requester(), x.status.CanaryWeight, x.now.UTC().Format("2006-01-02T15:04:05Z"), x.canary.Namespace, x.canary.Name)
	x.event(corev1.EventTypeNormal, ReasonCommand, "Pause", "Analysis %s", msg)
	x.setCondition(ConditionPaused, metav1.ConditionTrue, "OperatorPause", msg)
	x.transition(x.status.Phase, fmt.Sprintf("analysing revision %s: %s", x.status.CanaryRevision, msg))
}

// commandResume ends a pause; the next check is due one interval from now.
func (x *pass) commandResume() {
	if !meta.IsStatusConditionTrue(x.status.Conditions, ConditionPaused) {
		x.commandRefused("the analysis is not paused")
		return
	}
	x.event(corev1.EventTypeNormal, ReasonCommand, "Resume", "Analysis resumed by %s", x.requester())
	x.clearPause()
	if x.status.LastStepTime != nil {
		x.status.LastStepTime = x.stamp()
	}
	x.transition(x.status.Phase, fmt.Sprintf("analysing revision %s at canary weight %d%%: resumed by %s", x.status.CanaryRevision, x.status.CanaryWeight, x.requester()))
	x.requeueAfter(x.canary.AnalysisInterval())
}

func (x *pass) clearPause() {
	if meta.FindStatusCondition(x.status.Conditions, ConditionPaused) != nil {
		x.setCondition(ConditionPaused, metav1.ConditionFalse, "Resumed", "the analysis is not paused")
	}
}

// held keeps a paused analysis where it is; only a resume (or a revert, a new revision,
// a canary losing readiness) moves it.
func (x *pass) held() {
	x.requeueAfter(x.canary.AnalysisInterval())
}

// commandRefused reports a command that does not apply; the annotation is removed all
// the same, so it never fires later by surprise.
func (x *pass) commandRefused(why string) {
	if why == "" {
		why = fmt.Sprintf("it does not apply in phase %s", x.status.Phase)
		if _, known := commandSituations[x.command()]; !known {
			why = fmt.Sprintf("unknown command (use one of %v)", v1beta1.Commands)
		}
	}
	x.event(corev1.EventTypeWarning, ReasonCommandRefused, "Command", "Command %q from %s refused: %s", x.command(), x.requester(), why)
}

// clearCommand removes the command annotations once the decision is recorded. A pass that
// dies before this runs the command again: promote, abort and retry are then refused in
// their new phase, pause and resume are idempotent.
func (x *pass) clearCommand(ctx context.Context) error {
	if x.command() == "" && x.canary.Annotations[v1beta1.AnnotationCommandBy] == "" {
		return nil
	}
	orig := x.canary.DeepCopy()
	delete(x.canary.Annotations, v1beta1.AnnotationCommand)
	delete(x.canary.Annotations, v1beta1.AnnotationCommandBy)
	if err := x.r.Client.Patch(ctx, x.canary, client.MergeFrom(orig)); err != nil {
		return fmt.Errorf("remove the command annotation: %w", err)
	}
	x.r.memo.wrote(memoCanary, canaryKey(x.canary), x.canary.ResourceVersion)
	return nil
}
