package rollout

import (
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Situation is what a pass observed, reduced to the one fact that decides the next
// transition (table.go). classify computes it from an observation and nothing else.
type Situation string

// The situations, in the order classify tests them.
const (
	// SitTargetMissing: the guarded Deployment does not exist.
	SitTargetMissing Situation = "TargetMissing"
	// SitStable: the live template is the stable revision.
	SitStable Situation = "Stable"
	// SitDrift: the live template's hash differs from the stable revision, but the
	// template is what the stable revision's ReplicaSet runs (identity.go): only its
	// representation moved (a k8s.io/api bump, a new server default, a field the
	// apiserver drops). Nothing would roll.
	SitDrift Situation = "Drift"
	// SitFailedRevision: the live revision was rolled back before.
	SitFailedRevision Situation = "FailedRevision"
	// SitNewRevision: a revision that is not analysed yet, all confirm-rollout gates open.
	SitNewRevision Situation = "NewRevision"
	// SitGated: a revision that is not analysed yet, a confirm-rollout gate closed.
	SitGated Situation = "Gated"
	// SitCanaryPending: the analysed revision's canary is not ready yet, within its
	// progress deadline, and has had no traffic.
	SitCanaryPending Situation = "CanaryPending"
	// SitCanaryLost: the canary had traffic and is not ready now.
	SitCanaryLost Situation = "CanaryLost"
	// SitCanaryStuck: the canary is not ready past its progress deadline, or its
	// Deployment reports ProgressDeadlineExceeded.
	SitCanaryStuck Situation = "CanaryStuck"
	// SitAnalysisWait: the canary is ready and the next check is not due.
	SitAnalysisWait Situation = "AnalysisWait"
	// SitAnalysisDue: the canary is ready and a check is due.
	SitAnalysisDue Situation = "AnalysisDue"
	// SitRolling: promotion; the target rolls the promoted revision within its deadline.
	SitRolling Situation = "Rolling"
	// SitRollStuck: promotion; the target's rollout exceeded its progress deadline.
	SitRollStuck Situation = "RollStuck"
	// SitRolled: promotion; the target serves the promoted revision and is ready.
	SitRolled Situation = "Rolled"
	// SitHeld: an operator paused the analysis (coalmine pause); nothing advances.
	SitHeld Situation = "Held"
	// The operator commands of coalmine.dev/command (coalmine promote, abort, retry, pause,
	// resume): they come first, after a missing target.
	SitCommandPromote Situation = "CommandPromote"
	SitCommandAbort   Situation = "CommandAbort"
	SitCommandRetry   Situation = "CommandRetry"
	SitCommandPause   Situation = "CommandPause"
	SitCommandResume  Situation = "CommandResume"
	// SitCommandUnknown: the annotation holds no known command.
	SitCommandUnknown Situation = "CommandUnknown"
)

var commandSituations = map[string]Situation{
	v1beta1.CommandPromote: SitCommandPromote,
	v1beta1.CommandAbort:   SitCommandAbort,
	v1beta1.CommandRetry:   SitCommandRetry,
	v1beta1.CommandPause:   SitCommandPause,
	v1beta1.CommandResume:  SitCommandResume,
}

// Situations lists every situation, for the table's test.
var Situations = []Situation{
	SitTargetMissing, SitStable, SitDrift, SitFailedRevision, SitNewRevision, SitGated,
	SitCanaryPending, SitCanaryLost, SitCanaryStuck, SitAnalysisWait, SitAnalysisDue,
	SitRolling, SitRollStuck, SitRolled, SitHeld,
	SitCommandPromote, SitCommandAbort, SitCommandRetry, SitCommandPause, SitCommandResume, SitCommandUnknown,
}

// observation is what classify needs: plain values gathered by observe.go, so the
// classification is a pure function and its test needs no API server.
type observation struct {
	phase v1beta1.CanaryPhase
	now   time.Time
	// command is the operator's coalmine.dev/command, "" when none.
	command string
	// operatorPaused: an operator paused the analysis (condition Paused).
	operatorPaused bool

	targetFound bool
	// live is the revision of the target's template as it is now.
	live string
	// stable, canary and failed are the revisions the status records.
	stable, canary, failed string
	// matchesServing: the live template is what the stable revision's ReplicaSet runs
	// (only computed when live differs from stable and from the analysed revision).
	matchesServing bool
	// gateClosed is why a confirm-rollout gate is closed ("" when open); only asked
	// when the revision is new.
	gateClosed string

	// The analysed revision's canary (phase Progressing).
	canaryReady  bool
	canaryFailed bool // ProgressDeadlineExceeded on the canary Deployment
	hadTraffic   bool // a step ran: the canary had or has a weight
	waitDeadline time.Time
	nextCheck    time.Time // zero: the first step is due at once
	targetReady  bool      // promotion: the target runs the revision, ready
	targetFailed bool      // promotion: ProgressDeadlineExceeded on the target
	rollDeadline time.Time // promotion: the bound of the target's rollout
}

// classify is the one place where a pass's observations become a situation.
func classify(o observation) Situation {
	if !o.targetFound {
		return SitTargetMissing
	}
	if o.command != "" {
		if s, ok := commandSituations[o.command]; ok {
			return s
		}
		return SitCommandUnknown
	}
	analysing := o.phase.Analysing() || o.phase == v1beta1.PhasePromoting || o.phase == v1beta1.PhaseFinalising
	switch {
	case o.live == o.stable:
		return SitStable
	case analysing && o.live == o.canary:
		if o.phase.Analysing() {
			return classifyCanary(o)
		}
		return classifyRoll(o)
	case o.matchesServing:
		return SitDrift
	case o.live == o.failed:
		return SitFailedRevision
	case o.gateClosed != "":
		return SitGated
	default:
		return SitNewRevision
	}
}

func classifyCanary(o observation) Situation {
	switch {
	case o.canaryFailed:
		return SitCanaryStuck
	case !o.canaryReady && o.hadTraffic:
		// Even a paused analysis takes the weight off a canary without ready pods.
		return SitCanaryLost
	case o.operatorPaused:
		return SitHeld
	case !o.canaryReady && !o.now.Before(o.waitDeadline):
		return SitCanaryStuck
	case !o.canaryReady:
		return SitCanaryPending
	case o.now.Before(o.nextCheck):
		return SitAnalysisWait
	default:
		return SitAnalysisDue
	}
}

func classifyRoll(o observation) Situation {
	switch {
	case o.targetReady:
		return SitRolled
	case o.targetFailed || !o.now.Before(o.rollDeadline):
		return SitRollStuck
	default:
		return SitRolling
	}
}
