package rollout

import (
	"testing"
	"time"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// The state table, cell by cell: every phase x situation, including the cells that
// cannot happen (Impossible). A change to table.go must change this test too.
func TestStateTableEveryCell(t *testing.T) {
	const (
		ini = actInitialize
		idl = actIdle
		mis = actTargetMissing
		stp = actRestamp
		sta = actStart
		wai = actWait
		rst = actRestart
		ref = actRefuseFailed
		rev = actRevert
		awc = actAwaitCanary
		los = actCanaryLost
		rbk = actRollback
		aws = actAwaitStep
		ana = actAnalyse
		sup = actSupersede
		awr = actAwaitRoll
		pfl = actPromotionFailed
		fin = actFinalise
		hld = actHeld
		cpr = actCmdPromote
		cab = actCmdAbort
		crt = actCmdRetry
		cpa = actCmdPause
		cre = actCmdResume
		no  = actCmdRefused
		imp = actImpossible
	)
	// Columns in the order of Situations:
	// TargetMissing Stable Drift FailedRevision NewRevision Gated | CanaryPending CanaryLost
	// CanaryStuck AnalysisWait AnalysisDue | Rolling RollStuck Rolled | Held | commands:
	// Promote Abort Retry Pause Resume Unknown
	want := map[v1beta1.CanaryPhase][]action{
		v1beta1.PhaseInitializing:     {mis, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini},
		v1beta1.PhaseInitialized:      {mis, idl, stp, ref, sta, wai, imp, imp, imp, imp, imp, imp, imp, imp, imp, no, no, no, no, cre, no},
		v1beta1.PhaseWaiting:          {mis, rev, rev, ref, sta, wai, imp, imp, imp, imp, imp, imp, imp, imp, imp, cpr, cab, no, no, cre, no},
		v1beta1.PhaseProgressing:      {mis, rev, rev, ref, rst, wai, awc, los, rbk, aws, ana, imp, imp, imp, hld, cpr, cab, no, cpa, cre, no},
		v1beta1.PhaseWaitingPromotion: {mis, rev, rev, ref, rst, wai, awc, los, rbk, aws, ana, imp, imp, imp, hld, cpr, cab, no, cpa, cre, no},
		v1beta1.PhasePromoting:        {mis, rev, rev, sup, sup, sup, imp, imp, imp, imp, imp, awr, pfl, fin, imp, no, cab, no, no, cre, no},
		v1beta1.PhaseFinalising:       {mis, rev, rev, sup, sup, sup, imp, imp, imp, imp, imp, awr, pfl, fin, imp, no, cab, no, no, cre, no},
		v1beta1.PhaseSucceeded:        {mis, idl, stp, ref, sta, wai, imp, imp, imp, imp, imp, imp, imp, imp, imp, no, no, no, no, cre, no},
		v1beta1.PhaseFailed:           {mis, rev, rev, idl, sta, wai, imp, imp, imp, imp, imp, imp, imp, imp, imp, cpr, no, crt, no, cre, no},
		v1beta1.PhaseTerminating:      {mis, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini, ini},
	}
	phases := []v1beta1.CanaryPhase{
		v1beta1.PhaseInitializing, v1beta1.PhaseInitialized, v1beta1.PhaseWaiting, v1beta1.PhaseProgressing, v1beta1.PhaseWaitingPromotion,
		v1beta1.PhasePromoting, v1beta1.PhaseFinalising, v1beta1.PhaseSucceeded, v1beta1.PhaseFailed, v1beta1.PhaseTerminating,
	}
	if len(want) != len(phases) {
		t.Fatalf("the test covers %d phases, the API has %d", len(want), len(phases))
	}
	for _, p := range phases {
		row := want[p]
		if len(row) != len(Situations) {
			t.Fatalf("%s: %d cells for %d situations", p, len(row), len(Situations))
		}
		for i, s := range Situations {
			t.Run(string(p)+"/"+string(s), func(t *testing.T) {
				if got := decide(p, s); got != row[i] {
					t.Errorf("decide(%s, %s) = %s, want %s", p, s, got, row[i])
				}
			})
		}
	}
	if got := decide("", SitStable); got != actInitialize {
		t.Errorf("a Canary with no phase yet: %s, want Initialize", got)
	}
}

// Every action of the table has a handler in act: a cell never falls through to
// Impossible by accident.
func TestStateTableActionsAreHandled(t *testing.T) {
	handled := map[action]bool{
		actInitialize: true, actIdle: true, actTargetMissing: true, actRestamp: true, actStart: true,
		actWait: true, actRestart: true, actRefuseFailed: true, actRevert: true, actAwaitCanary: true,
		actCanaryLost: true, actRollback: true, actAwaitStep: true, actAnalyse: true, actSupersede: true,
		actAwaitRoll: true, actPromotionFailed: true, actFinalise: true, actHeld: true,
		actCmdPromote: true, actCmdAbort: true, actCmdRetry: true, actCmdPause: true, actCmdResume: true, actCmdRefused: true,
	}
	for p, row := range table {
		for s, a := range row {
			if !handled[a] {
				t.Errorf("%s/%s maps to %s, which act does not handle", p, s, a)
			}
		}
	}
}

func TestClassify(t *testing.T) {
	now := start
	later, earlier := now.Add(time.Minute), now.Add(-time.Minute)
	base := func(phase v1beta1.CanaryPhase, live string) observation {
		return observation{phase: phase, now: now, targetFound: true, live: live, stable: "s", canary: "c", failed: "f"}
	}
	with := func(o observation, f func(*observation)) observation { f(&o); return o }
	tests := []struct {
		name string
		obs  observation
		want Situation
	}{
		{"no target", observation{phase: v1beta1.PhaseProgressing}, SitTargetMissing},
		{"stable template", base(v1beta1.PhaseSucceeded, "s"), SitStable},
		{"stable wins over everything in Progressing", base(v1beta1.PhaseProgressing, "s"), SitStable},
		{"hash differs, template is the stable ReplicaSet's", with(base(v1beta1.PhaseSucceeded, "x"), func(o *observation) { o.matchesServing = true }), SitDrift},
		{"the failed revision again", base(v1beta1.PhaseFailed, "f"), SitFailedRevision},
		{"a new revision", base(v1beta1.PhaseSucceeded, "n"), SitNewRevision},
		{"a new revision behind a closed gate", with(base(v1beta1.PhaseSucceeded, "n"), func(o *observation) { o.gateClosed = "no" }), SitGated},
		{"a newer revision mid-analysis", base(v1beta1.PhaseProgressing, "n"), SitNewRevision},
		{"canary not ready yet", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.waitDeadline = later }), SitCanaryPending},
		{"canary not ready past its deadline", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.waitDeadline = earlier }), SitCanaryStuck},
		{"canary deployment gave up", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.canaryFailed = true; o.canaryReady = true }), SitCanaryStuck},
		{"canary lost readiness after traffic", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.hadTraffic = true; o.waitDeadline = later }), SitCanaryLost},
		{"ready, check not due", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.canaryReady = true; o.nextCheck = later }), SitAnalysisWait},
		{"ready, check due", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.canaryReady = true; o.nextCheck = earlier }), SitAnalysisDue},
		{"ready, first step", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.canaryReady = true }), SitAnalysisDue},
		{"promotion rolling", with(base(v1beta1.PhasePromoting, "c"), func(o *observation) { o.rollDeadline = later }), SitRolling},
		{"promotion past the target's deadline", with(base(v1beta1.PhasePromoting, "c"), func(o *observation) { o.rollDeadline = earlier }), SitRollStuck},
		{"promotion: target gave up", with(base(v1beta1.PhaseFinalising, "c"), func(o *observation) { o.targetFailed = true; o.rollDeadline = later }), SitRollStuck},
		{"promotion done", with(base(v1beta1.PhasePromoting, "c"), func(o *observation) { o.targetReady = true }), SitRolled},
		{"a newer revision during promotion", base(v1beta1.PhasePromoting, "n"), SitNewRevision},
		{"the analysed revision outside an analysis is new", base(v1beta1.PhaseSucceeded, "c"), SitNewRevision},
		{"WaitingPromotion analyses like Progressing", with(base(v1beta1.PhaseWaitingPromotion, "c"), func(o *observation) { o.canaryReady = true }), SitAnalysisDue},
		{"an operator's pause holds the analysis", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.canaryReady = true; o.operatorPaused = true }), SitHeld},
		{"a paused canary that lost readiness still loses its weight", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.hadTraffic = true; o.operatorPaused = true; o.waitDeadline = later }), SitCanaryLost},
		{"a command comes first", with(base(v1beta1.PhaseProgressing, "s"), func(o *observation) { o.command = v1beta1.CommandPromote }), SitCommandPromote},
		{"an unknown command", with(base(v1beta1.PhaseProgressing, "c"), func(o *observation) { o.command = "yolo" }), SitCommandUnknown},
		{"no command without a target", observation{command: v1beta1.CommandAbort}, SitTargetMissing},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := classify(tt.obs); got != tt.want {
				t.Errorf("classify = %s, want %s", got, tt.want)
			}
		})
	}
}
