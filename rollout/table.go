package rollout

import "github.com/coalmine-dev/coalmine/api/v1beta1"

// action is what a pass decides to do in a situation. An action only changes the status
// (phase, counters, revisions, message) and queues events: the world (route, canary
// Deployment, target) follows the recorded status afterwards (converge.go), so a pass
// that dies between the two converges on the decision the next time.
type action string

const (
	// actInitialize records the stable revision (what serves) -> Initialized.
	actInitialize action = "Initialize"
	// actIdle changes nothing: the world is converged on the phase as it is.
	actIdle action = "Idle"
	// actTargetMissing reports the missing Deployment; nothing moves.
	actTargetMissing action = "TargetMissing"
	// actRestamp records the live hash as the stable revision: nothing would roll.
	actRestamp action = "Restamp"
	// actStart begins the analysis of a new revision -> Progressing.
	actStart action = "Start"
	// actWait holds a new revision behind a closed confirm-rollout gate -> Waiting.
	actWait action = "Wait"
	// actRestart points a running analysis at a newer revision -> Progressing.
	actRestart action = "Restart"
	// actRefuseFailed holds a revision that failed before -> Failed.
	actRefuseFailed action = "RefuseFailed"
	// actRevert ends a held or analysed revision replaced by the stable one -> Succeeded.
	actRevert action = "Revert"
	// actAwaitCanary waits, bounded by the progress deadline, for the canary to be ready.
	actAwaitCanary action = "AwaitCanary"
	// actCanaryLost takes the canary's weight away; each interval unready is a failed check.
	actCanaryLost action = "CanaryLost"
	// actRollback ends the revision as failed -> Failed.
	actRollback action = "Rollback"
	// actAwaitStep waits for the next check. It and actAnalyse first make sure the route
	// carries the step's weight (steproute.go): while it does not, the interval does not
	// start, and past the progress deadline the revision is rolled back -> Failed.
	actAwaitStep action = "AwaitStep"
	// actAnalyse runs one interval's checks -> Progressing (next step), Promoting or Failed.
	actAnalyse action = "Analyse"
	// actSupersede: a newer revision arrived while one was being promoted; the promoted one
	// is stable, the newcomer is judged as in Succeeded.
	actSupersede action = "Supersede"
	// actAwaitRoll waits, bounded by the target's progress deadline, for its rollout.
	actAwaitRoll action = "AwaitRoll"
	// actPromotionFailed ends a promotion whose rollout exceeded its deadline -> Failed.
	actPromotionFailed action = "PromotionFailed"
	// actFinalise shifts traffic back to primary (stepWeightPromotion) -> Finalising, then
	// records the promotion -> Succeeded.
	actFinalise action = "Finalise"
	// actHeld keeps a paused analysis where it is (coalmine pause); the wait is shown in
	// the Paused condition.
	actHeld action = "Held"
	// The operator commands (operator.go): each is carried out once, recorded with who
	// asked, and the annotation removed.
	actCmdPromote action = "CommandPromote"
	actCmdAbort   action = "CommandAbort"
	actCmdRetry   action = "CommandRetry"
	actCmdPause   action = "CommandPause"
	actCmdResume  action = "CommandResume"
	// actCmdRefused reports a command that does not apply in the phase, and removes it.
	actCmdRefused action = "CommandRefused"
	// actImpossible marks a cell that cannot happen: the pass reports it and moves nothing.
	actImpossible action = "Impossible"
)

// commandCells are the command columns of a row: refused unless the row says otherwise.
// resume is always accepted (it only clears a pause).
func commandCells(row map[Situation]action, accepted ...Situation) map[Situation]action {
	for _, s := range []Situation{SitCommandPromote, SitCommandAbort, SitCommandRetry, SitCommandPause, SitCommandUnknown} {
		row[s] = actCmdRefused
	}
	row[SitCommandResume] = actCmdResume
	cmd := map[Situation]action{
		SitCommandPromote: actCmdPromote, SitCommandAbort: actCmdAbort, SitCommandRetry: actCmdRetry, SitCommandPause: actCmdPause,
	}
	for _, s := range accepted {
		row[s] = cmd[s]
	}
	return row
}

// steadyRow is the row of a phase with no revision in flight (Initialized, Succeeded).
var steadyRow = commandCells(map[Situation]action{
	SitTargetMissing:  actTargetMissing,
	SitStable:         actIdle,
	SitDrift:          actRestamp,
	SitFailedRevision: actRefuseFailed,
	SitNewRevision:    actStart,
	SitGated:          actWait,
})

// analysisRow is the row of Progressing and WaitingPromotion (the analysis goes on at
// the maximum weight while a confirm-promotion gate is closed).
func analysisRow() map[Situation]action {
	return commandCells(map[Situation]action{
		SitTargetMissing:  actTargetMissing,
		SitStable:         actRevert,
		SitDrift:          actRevert,
		SitFailedRevision: actRefuseFailed,
		SitNewRevision:    actRestart,
		SitGated:          actWait,
		SitCanaryPending:  actAwaitCanary,
		SitCanaryLost:     actCanaryLost,
		SitCanaryStuck:    actRollback,
		SitAnalysisWait:   actAwaitStep,
		SitAnalysisDue:    actAnalyse,
		SitHeld:           actHeld,
	}, SitCommandPromote, SitCommandAbort, SitCommandPause)
}

// promotionRow is the row of Promoting and Finalising.
var promotionRow = commandCells(map[Situation]action{
	SitTargetMissing:  actTargetMissing,
	SitStable:         actRevert,
	SitDrift:          actRevert,
	SitFailedRevision: actSupersede,
	SitNewRevision:    actSupersede,
	SitGated:          actSupersede,
	SitRolling:        actAwaitRoll,
	SitRollStuck:      actPromotionFailed,
	SitRolled:         actFinalise,
}, SitCommandAbort)

// table maps phase x situation to the action. A situation missing from a row cannot
// happen in that phase (classify only yields the canary and roll situations in
// Progressing and Promoting/Finalising): decide reports it as actImpossible.
var table = map[v1beta1.CanaryPhase]map[Situation]action{
	// Initializing (and a status restored in Terminating without a deletion): whatever
	// the Deployment looks like, the first step is to record its stable revision.
	v1beta1.PhaseInitializing: allSituations(actInitialize, SitTargetMissing, actTargetMissing),
	v1beta1.PhaseTerminating:  allSituations(actInitialize, SitTargetMissing, actTargetMissing),
	v1beta1.PhaseInitialized:  steadyRow,
	v1beta1.PhaseSucceeded:    steadyRow,
	v1beta1.PhaseWaiting: commandCells(map[Situation]action{
		SitTargetMissing:  actTargetMissing,
		SitStable:         actRevert,
		SitDrift:          actRevert,
		SitFailedRevision: actRefuseFailed,
		SitNewRevision:    actStart,
		SitGated:          actWait,
	}, SitCommandPromote, SitCommandAbort),
	v1beta1.PhaseProgressing:      analysisRow(),
	v1beta1.PhaseWaitingPromotion: analysisRow(),
	v1beta1.PhasePromoting:        promotionRow,
	v1beta1.PhaseFinalising:       promotionRow,
	v1beta1.PhaseFailed: commandCells(map[Situation]action{
		SitTargetMissing:  actTargetMissing,
		SitStable:         actRevert,
		SitDrift:          actRevert,
		SitFailedRevision: actIdle,
		SitNewRevision:    actStart,
		SitGated:          actWait,
	}, SitCommandPromote, SitCommandRetry),
}

func allSituations(a action, except Situation, other action) map[Situation]action {
	row := make(map[Situation]action, len(Situations))
	for _, s := range Situations {
		row[s] = a
	}
	row[except] = other
	return row
}

// decide looks up the action of phase p in situation s.
func decide(p v1beta1.CanaryPhase, s Situation) action {
	if p == "" {
		p = v1beta1.PhaseInitializing
	}
	if a, ok := table[p][s]; ok {
		return a
	}
	return actImpossible
}
