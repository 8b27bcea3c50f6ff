package rollout

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// Condition types of a Canary.
const (
	// ConditionPromoted is Flagger's condition: True once a revision is initialized or
	// promoted, Unknown while one is analysed or promoted, False after a rollback.
	ConditionPromoted = "Promoted"
	// ConditionReady says whether coalmine has what it needs to guard the target: the
	// Deployment, a router for the route kind, the Services, the namespace in the
	// webhook's scope and no reconcile error.
	ConditionReady = "Ready"
	// ConditionBareServices is True while Services that coalmine does not own select the
	// target's pods (traffic through them bypasses the split), and absent otherwise.
	ConditionBareServices = "BareServices"

	conditionPromoted     = ConditionPromoted
	conditionReady        = ConditionReady
	conditionBareServices = ConditionBareServices
)

// stamp is now as the API stores it (seconds), so a status read back compares equal.
func (x *pass) stamp() *metav1.Time {
	t := metav1.NewTime(x.now.Truncate(time.Second))
	return &t
}

func (x *pass) setCondition(typ string, status metav1.ConditionStatus, reason, message string) {
	meta.SetStatusCondition(&x.status.Conditions, metav1.Condition{
		Type: typ, Status: status, Reason: reason, Message: message,
		ObservedGeneration: x.canary.Generation, LastTransitionTime: *x.stamp(),
	})
}

// transition moves to phase p with message and keeps the Promoted condition in step, as
// Flagger does. It is the only writer of status.phase: actions call it, helpers never do.
func (x *pass) transition(p v1beta1.CanaryPhase, message string) {
	if x.status.Phase != p {
		x.status.Phase = p
		x.status.LastTransitionTime = x.stamp()
	}
	x.status.Message = message
	if !p.Analysing() {
		x.removeCondition(ConditionRouteSynced)
	}
	switch p {
	case v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded:
		x.setCondition(conditionPromoted, metav1.ConditionTrue, string(p), message)
	case v1beta1.PhaseFailed:
		x.setCondition(conditionPromoted, metav1.ConditionFalse, string(p), message)
	case v1beta1.PhaseTerminating:
		// Leave Promoted as it was: the Canary is going away.
	default:
		x.setCondition(conditionPromoted, metav1.ConditionUnknown, string(p), message)
	}
}

// Conditions kstatus (and so Flux's health checks and `wait: true`) reads.
const (
	// ConditionReconciling is True while a revision is in flight (analysed, waiting for a
	// gate, promoted): kstatus InProgress.
	ConditionReconciling = "Reconciling"
	// ConditionStalled is True after a rollback: kstatus Failed, with coalmine's reason.
	ConditionStalled = "Stalled"
)

// setHealth sets Reconciling and Stalled from the phase, so kstatus computes InProgress
// while a revision is analysed or promoted, Current once it is promoted (or the Canary is
// initialized), and Failed after a rollback, with the rollback's reason. Before this a
// rolled-back Canary read as Current ("Resource is Ready"): Flux called a failed release
// healthy. Both are "abnormal-true" conditions, present only while true, as Flux's own
// controllers keep them (kstatus reads an absent one as false): two conditions fewer on
// every settled Canary, ~0.5 KiB of heap each in the cache.
func (x *pass) setHealth() {
	p := x.status.Phase
	switch p {
	case v1beta1.PhaseInitialized, v1beta1.PhaseSucceeded, v1beta1.PhaseFailed:
		x.removeCondition(ConditionReconciling)
	default:
		reason := string(p)
		if reason == "" {
			reason = string(v1beta1.PhaseInitializing)
		}
		x.setCondition(ConditionReconciling, metav1.ConditionTrue, reason, x.status.Message)
	}
	if p == v1beta1.PhaseFailed {
		x.setCondition(ConditionStalled, metav1.ConditionTrue, "RolledBack", x.status.Message)
	} else {
		x.removeCondition(ConditionStalled)
	}
}

// removeCondition drops condition t. meta.RemoveStatusCondition copies the list even
// when t is not in it, and the loop asks three times a pass for conditions mostly absent.
func (x *pass) removeCondition(t string) {
	if meta.FindStatusCondition(x.status.Conditions, t) != nil {
		meta.RemoveStatusCondition(&x.status.Conditions, t)
	}
}

// setReady sets Ready from what the pass found: stopped, degraded, or all in place; and
// the kstatus conditions (setHealth).
func (x *pass) setReady() {
	x.setHealth()
	switch {
	case x.notReady != nil:
		x.setCondition(conditionReady, metav1.ConditionFalse, x.notReady.reason, x.notReady.message)
	case x.degraded != nil:
		x.setCondition(conditionReady, metav1.ConditionFalse, x.degraded.reason, x.degraded.message)
	default:
		x.setCondition(conditionReady, metav1.ConditionTrue, "Reconciled", "the Services, the route and the target are in place")
	}
}

// writeStatus merge-patches the working status when it differs from the one read. The
// loop is the status's one writer, so the patch carries no resourceVersion: a competing
// metadata edit cannot make a decision fail to be recorded. The resourceVersion the
// write returns is remembered, so a later pass that reads an older Canary from the cache
// waits instead of acting on it (see writeMemo).
//
// The patch is the difference of the two statuses alone, and the answer is asked for as
// metadata only: a status write is the loop's most frequent API call, and diffing and
// decoding whole Canaries (spec, managedFields) made it its most expensive one.
func (x *pass) writeStatus(ctx context.Context) error {
	x.status.ObservedGeneration = x.canary.Generation
	// The cheap check first (no encoding); statusPatch then also finds statuses that
	// differ in memory but encode alike.
	if equality.Semantic.DeepEqual(*x.status, x.canary.Status) {
		return nil
	}
	patch, err := statusPatch(&x.canary.Status, x.status)
	if err != nil {
		return err
	}
	if patch == nil {
		return nil // it encodes as stored (a time differs below the second): nothing to write
	}
	written := &metav1.PartialObjectMetadata{}
	written.SetGroupVersionKind(v1beta1.GroupVersion.WithKind("Canary"))
	written.Namespace, written.Name = x.canary.Namespace, x.canary.Name
	if err := x.r.Client.Status().Patch(ctx, written, client.RawPatch(types.MergePatchType, patch)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("patch canary status: %w", err)
	}
	x.r.memo.wrote(memoCanary, client.ObjectKeyFromObject(x.canary), written.ResourceVersion)
	x.canary.Status = *x.status.DeepCopy()
	x.canary.ResourceVersion = written.ResourceVersion
	return nil
}

// impossible reports a phase x situation cell that the table says cannot happen. Nothing
// moves: a wrong guess about the world must not become a rollout.
func (x *pass) impossible() {
	msg := fmt.Sprintf("phase %s cannot be in situation %s; holding everything as it is", x.status.Phase, x.situation)
	x.event(corev1.EventTypeWarning, "Impossible", "Decide", "%s", msg)
	x.degrade("Impossible", "%s", msg)
	x.requeueAfter(x.canary.AnalysisInterval())
}

// Memo kinds: the objects whose own writes a pass must not read behind.
const (
	memoCanary = "canary"
	memoTarget = "target"
)

// writeMemo remembers the resourceVersion of the loop's last write of each Canary and
// target, and the route weight it last applied. The cache may still hold the object as it
// was before that write (a pass queued meanwhile reads it): acting on that old state once
// resurrected a rolled-back canary. Correctness must not rest on controller-runtime's
// experimental read-your-writes mode, so a pass checks the memo itself. The memo is lost
// with the process; a new process's cache starts from a fresh list, and the route weight
// is applied once more.
type writeMemo struct {
	mu sync.Mutex
	// rv is the resourceVersion of the last write, by kind and key, kept as a number:
	// less heap per canary than the text under a "kind/namespace/name" string key.
	rv      map[memoKey]uint64
	weights map[types.NamespacedName]appliedWeight
	// deleted is the UID of the canary Deployment each Canary's pass last deleted: the
	// cache can go on showing it, ready, for a while (seconds on a loaded machine), and a
	// retry of the same revision right after a rollback then took it for its canary and
	// gave weight to pods being removed (found by make test in CI).
	deleted map[types.NamespacedName]types.UID
	// awaiting are the Canaries whose pass found the cache behind the loop's last write
	// (ownWrite).
	awaiting map[types.NamespacedName]*ownWrite
}

// ownWrite is a pass's wait for the cache to receive the loop's last write of a Canary.
// While the pass blocks on it, the write's watch event wakes it (arrived closes ch);
// once the pass has given up, the event starts the next pass instead (ownWriteArrived).
type ownWrite struct {
	ch      chan struct{}
	blocked bool
}

// await starts a blocking wait for the loop's last write of Canary key to reach the cache.
// The caller ends it with release.
func (m *writeMemo) await(key types.NamespacedName) <-chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.awaiting == nil {
		m.awaiting = map[types.NamespacedName]*ownWrite{}
	}
	w := &ownWrite{ch: make(chan struct{}), blocked: true}
	m.awaiting[key] = w
	return w.ch
}

// release ends a pass's blocking wait for Canary key. It reports whether the write arrived
// meanwhile. If not, and passOnArrival is set, the write's event starts a pass when it
// comes; otherwise the wait is forgotten.
func (m *writeMemo) release(key types.NamespacedName, passOnArrival bool) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.awaiting[key]
	if !ok {
		return true
	}
	if passOnArrival {
		w.blocked = false
	} else {
		delete(m.awaiting, key)
	}
	return false
}

// arrived is told that the cache now holds rv of Canary key. When that is at least the
// loop's last write of it, the wait ends: a blocked pass is woken (false: it goes on
// itself), and true asks for a pass when none blocks any more.
func (m *writeMemo) arrived(key types.NamespacedName, rv string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	w, ok := m.awaiting[key]
	if !ok {
		return false
	}
	last, ok := m.rv[memoKey{memoCanary, key}]
	r, err := strconv.ParseUint(rv, 10, 64)
	if ok && err == nil && r < last {
		return false
	}
	delete(m.awaiting, key)
	if w.blocked {
		close(w.ch)
		return false
	}
	return true
}

func (m *writeMemo) deletedCanary(key types.NamespacedName, uid types.UID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.deleted == nil {
		m.deleted = map[types.NamespacedName]types.UID{}
	}
	m.deleted[key] = uid
}

// canaryGone reports whether uid is the canary Deployment this process deleted for key.
// Any other answer from the cache (another UID, or none) ends the memory of it.
func (m *writeMemo) canaryGone(key types.NamespacedName, uid types.UID) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, ok := m.deleted[key]
	if ok && d == uid && uid != "" {
		return true
	}
	delete(m.deleted, key)
	return false
}

type memoKey struct {
	kind string
	key  types.NamespacedName
}

func (m *writeMemo) wrote(kind string, key types.NamespacedName, rv string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.rv == nil {
		m.rv = map[memoKey]uint64{}
	}
	w, err := strconv.ParseUint(rv, 10, 64)
	if err != nil {
		// Not a number: nothing to compare a later read with (see behind).
		delete(m.rv, memoKey{kind, key})
		return
	}
	m.rv[memoKey{kind, key}] = w
}

// behind reports whether rv (read from the cache) is older than the loop's own last
// write of that object. resourceVersions are etcd revisions; when either does not parse
// as a number the answer is "not behind", as before this guard existed.
func (m *writeMemo) behind(kind string, key types.NamespacedName, rv string) bool {
	m.mu.Lock()
	w, ok := m.rv[memoKey{kind, key}]
	m.mu.Unlock()
	if !ok {
		return false
	}
	r, err := strconv.ParseUint(rv, 10, 64)
	return err == nil && r < w
}

// appliedWeight is the route weight this process last applied for a Canary, and when.
type appliedWeight struct {
	weight int
	// stamp is the status stamp (whole seconds) of the pass that applied it, and lag how
	// long after that pass's start the route took the weight (the status write first).
	stamp time.Time
	lag   time.Duration
}

func (m *writeMemo) applied(key types.NamespacedName) (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	a, ok := m.weights[key]
	return a.weight, ok
}

// routeLag is how long after the step stamped at stamp the route took weight w, when
// this process applied it in that step's pass; 0 otherwise.
func (m *writeMemo) routeLag(key types.NamespacedName, w int, stamp time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if a, ok := m.weights[key]; ok && a.weight == w && a.stamp.Equal(stamp) {
		return a.lag
	}
	return 0
}

func (m *writeMemo) setApplied(key types.NamespacedName, a appliedWeight) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.weights == nil {
		m.weights = map[types.NamespacedName]appliedWeight{}
	}
	m.weights[key] = a
}

// forget drops what the memo knows of a Canary (deleted, or its route gone).
func (m *writeMemo) forget(key types.NamespacedName) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.weights, key)
	delete(m.rv, memoKey{memoCanary, key})
	delete(m.deleted, key)
	delete(m.awaiting, key)
}
