// Package canarywatch follows every Canary in the manager's cache, without touching the
// progression loop: it keeps a short history of each one's status (the web view's
// timeline) and exports the metrics the Grafana dashboard and the alerting rules need
// beyond the loop's own (promotions and rollbacks as counters, failed checks, thresholds,
// when a Canary last made progress). It reads only the cache and writes nothing.
package canarywatch

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// DefaultMaxSamples bounds the history of one Canary. A sample is taken when its status
// changes, about 15-20 per rollout of the seed's Canary, so this is the last ten rollouts
// or so. A sample of the seed's Canary holds ~0.5 KiB, so a Canary's history stays under
// ~100 KiB; at 1000 samples it reached ~0.5 MiB, half a GiB for a thousand Canaries.
const DefaultMaxSamples = 200

// Sample is one Canary's status at one moment, as the cache delivered it.
type Sample struct {
	Time         time.Time     `json:"time"`
	Phase        string        `json:"phase"`
	Weight       int           `json:"weight"`
	FailedChecks int           `json:"failedChecks"`
	Revision     string        `json:"revision,omitempty"`
	Message      string        `json:"message,omitempty"`
	Metrics      []MetricValue `json:"metrics,omitempty"`
}

// MetricValue is the last result of one metric, as the analysis recorded it in the
// Canary's status.
type MetricValue struct {
	Name string `json:"name"`
	// Value is nil when the check had none (no data, an error).
	Value     *float64   `json:"value"`
	Outcome   string     `json:"outcome,omitempty"`
	Message   string     `json:"message,omitempty"`
	CheckTime *time.Time `json:"checkTime,omitempty"`
}

// Threshold is the accepted range of a metric, from the Canary's spec; nil bounds are open.
type Threshold struct {
	Metric string   `json:"metric"`
	Min    *float64 `json:"min,omitempty"`
	Max    *float64 `json:"max,omitempty"`
}

// History is what the watcher knows of one Canary.
type History struct {
	Namespace  string      `json:"namespace"`
	Name       string      `json:"name"`
	Threshold  int         `json:"failedChecksThreshold"`
	Thresholds []Threshold `json:"thresholds"`
	// Since is when the watcher started following the Canary: the timeline begins there.
	Since   time.Time `json:"since"`
	Samples []Sample  `json:"samples"`
}

// Watcher follows the Canaries of a cache. Add it to the manager (mgr.Add): it runs on
// every replica, so the web view of any replica has a history; it exports its metrics
// only once elected, like the loop's, so one replica's series describe each Canary.
type Watcher struct {
	informers cache.Informers
	elected   <-chan struct{}
	now       func() time.Time
	max       int

	mu        sync.Mutex
	canaries  map[types.NamespacedName]*record
	exporting bool
}

type record struct {
	canary  *v1beta1.Canary
	since   time.Time
	samples []sample
	// key is a hash of what the last sample showed (sample.key): the key itself, with
	// the status message, was a few hundred bytes per Canary to answer "did it change".
	key uint64
	// progress is when the phase or the weight last changed (the stall alert's clock).
	progress time.Time
	// promotions and rollbacks count the transitions seen while this replica exported.
	promotions, rollbacks float64
}

// Options of New; zero values are defaults.
type Options struct {
	// Elected closes when this replica leads (mgr.Elected()); nil exports at once.
	Elected <-chan struct{}
	// Now is the clock; default time.Now.
	Now func() time.Time
	// MaxSamples bounds each Canary's history; default DefaultMaxSamples.
	MaxSamples int
}

// New returns a watcher of the Canaries in informers (the manager's cache).
func New(informers cache.Informers, o Options) *Watcher {
	w := &Watcher{informers: informers, elected: o.Elected, now: o.Now, max: o.MaxSamples,
		canaries: map[types.NamespacedName]*record{}}
	if w.now == nil {
		w.now = time.Now
	}
	if w.max <= 0 {
		w.max = DefaultMaxSamples
	}
	if w.elected == nil {
		closed := make(chan struct{})
		close(closed)
		w.elected = closed
	}
	return w
}

// NeedLeaderElection is false: every replica keeps a history for its web view.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start follows the Canaries until ctx is done, then drops the series it exported.
func (w *Watcher) Start(ctx context.Context) error {
	inf, err := w.informers.GetInformer(ctx, &v1beta1.Canary{})
	if err != nil {
		return fmt.Errorf("watch Canaries: %w", err)
	}
	reg, err := inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.Observe(canaryOf(obj)) },
		UpdateFunc: func(_, obj any) { w.Observe(canaryOf(obj)) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(toolscache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if c := canaryOf(obj); c != nil {
				w.Forget(c.Namespace, c.Name)
			}
		},
	})
	if err != nil {
		return fmt.Errorf("watch Canaries: %w", err)
	}
	select {
	case <-w.elected:
		w.startExporting()
	case <-ctx.Done():
	}
	<-ctx.Done()
	if err := inf.RemoveEventHandler(reg); err != nil {
		log.FromContext(ctx).Error(err, "stop watching Canaries")
	}
	w.stopExporting()
	return nil
}

func canaryOf(obj any) *v1beta1.Canary {
	c, _ := obj.(*v1beta1.Canary)
	return c
}

// Observe records c's status (the informer calls it; tests may too). c is kept, not
// copied: the caller must not modify it afterwards.
func (w *Watcher) Observe(c *v1beta1.Canary) {
	if c == nil {
		return
	}
	now := w.now()
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.canaries[key]
	var old *v1beta1.Canary
	if r == nil {
		r = &record{since: now, progress: firstProgress(c, now)}
		w.canaries[key] = r
	} else {
		old = r.canary
		if old.Status.Phase != c.Status.Phase || old.Status.CanaryWeight != c.Status.CanaryWeight {
			r.progress = now
		}
	}
	// The informer's object, not a copy: cached objects are never modified in place (an
	// update delivers a new one), and a copy per Canary cost ~2.5 KiB of heap per canary
	// (make bench's heap profile). Observe's callers hand over c for good.
	r.canary = c
	s := sampleOf(c, now)
	// A Canary the loop has not written yet has no phase: nothing to show.
	if k := s.key(); k != r.key && s.phase != "" {
		r.key = k
		var prev sample
		if n := len(r.samples); n > 0 {
			prev = r.samples[n-1]
		}
		s.share(&prev)
		r.samples = append(r.samples, s)
		if over := len(r.samples) - w.max; over > 0 {
			r.samples = slices.Delete(r.samples, 0, over)
		}
	}
	if w.exporting && old != nil {
		countTransition(old, c, r)
	}
}

// firstProgress is the last progress of a Canary seen for the first time: its last step
// or phase change, whichever is later (a new leader must not call a moving Canary stalled).
func firstProgress(c *v1beta1.Canary, now time.Time) time.Time {
	var t time.Time
	for _, ts := range []*time.Time{timeOf(c.Status.LastTransitionTime), timeOf(c.Status.LastStepTime)} {
		if ts != nil && ts.After(t) {
			t = *ts
		}
	}
	if t.IsZero() {
		return now
	}
	return t
}

// Forget drops a deleted Canary: its history and its series.
func (w *Watcher) Forget(namespace, name string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.canaries, types.NamespacedName{Namespace: namespace, Name: name})
}

// History is a copy of what the watcher knows of one Canary; false if it knows nothing.
func (w *Watcher) History(namespace, name string) (History, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	r := w.canaries[types.NamespacedName{Namespace: namespace, Name: name}]
	if r == nil {
		return History{}, false
	}
	return History{
		Namespace: namespace, Name: name,
		Threshold:  r.canary.Threshold(),
		Thresholds: Thresholds(r.canary),
		Since:      r.since,
		Samples:    public(r.samples),
	}, true
}

// startExporting serves w's series on /metrics, its counters from 0.
func (w *Watcher) startExporting() {
	w.mu.Lock()
	w.exporting = true
	for _, r := range w.canaries {
		r.promotions, r.rollbacks = 0, 0
	}
	w.mu.Unlock()
	exporters.add(w)
}

// stopExporting ends w's series.
func (w *Watcher) stopExporting() {
	exporters.remove(w)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.exporting = false
}

// Thresholds are the accepted ranges of c's metrics, as the analysis judges them: a
// thresholdRange as it is; otherwise a builtin success rate must stay at or above the
// threshold, any other metric at or below it.
func Thresholds(c *v1beta1.Canary) []Threshold {
	if c.Spec.Analysis == nil {
		return nil
	}
	var out []Threshold
	for _, m := range c.Spec.Analysis.Metrics {
		t := Threshold{Metric: m.Name}
		switch {
		case m.ThresholdRange != nil:
			t.Min, t.Max = m.ThresholdRange.Min, m.ThresholdRange.Max
		case m.Name == v1beta1.MetricRequestSuccessRate && m.TemplateRef == nil:
			t.Min = ptr(m.Threshold)
		default:
			t.Max = ptr(m.Threshold)
		}
		out = append(out, t)
	}
	return out
}

func ptr(v float64) *float64 { return &v }

func timeOf(t *metav1.Time) *time.Time {
	if t == nil || t.IsZero() {
		return nil
	}
	v := t.Time
	return &v
}
