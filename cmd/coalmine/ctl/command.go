package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

const (
	// defaultTimeout bounds the wait for the loop: it acts on a command at its next pass,
	// which the annotation change starts at once.
	defaultTimeout = time.Minute
	// eventGrace is how long the Event may follow the annotation's removal: the loop
	// records it through an asynchronous recorder.
	eventGrace = 10 * time.Second
	pollEvery  = 200 * time.Millisecond
	// conflictRetries bounds the get-and-patch attempts when the Canary changes between.
	conflictRetries = 5
)

// commandHelp says what each command does; the loop decides where it applies
// (rollout/table.go) and refuses it elsewhere with an Event.
var commandHelp = map[string]string{
	v1beta1.CommandPromote: "skip the remaining steps (or a closed gate) and promote the revision under analysis now; on a Failed Canary, promote the failed revision",
	v1beta1.CommandAbort:   "roll the revision under analysis (or being promoted) back now: route 100% to primary, remove the canary, phase Failed",
	v1beta1.CommandRetry:   "analyse the failed revision again from the first step (phase Failed only)",
	v1beta1.CommandPause:   "hold the analysis at the current weight until resume; no step, no check (status shows the pause)",
	v1beta1.CommandResume:  "continue a paused analysis; the next check is one interval later",
}

func runCommand(ctx context.Context, prog, cmd string, args []string, io IO) error {
	var conn connection
	fs := newFlagSet(prog, cmd, io, &conn)
	timeout := fs.Duration("timeout", defaultTimeout, "how long to wait for coalmine to carry the command out")
	wait := fs.Bool("wait", true, "wait for coalmine to carry the command out and print its Event")
	fs.Usage = func() {
		fmt.Fprintf(io.Err, `%s %s: %s.

Usage:
  %s %s [-n NAMESPACE] NAME

Sets %s=%s on the Canary; coalmine carries it out once, records an Event naming who
asked and removes the annotation. Flux and Argo CD do not own the annotation, so they
leave it alone.

Flags:
%s`, prog, cmd, commandHelp[cmd], prog, cmd, v1beta1.AnnotationCommand, cmd, fs.FlagUsages())
	}
	name, cl, ns, err := parseOne(fs, args, &conn, io)
	if err != nil {
		return err
	}
	r := &commander{cl: cl, io: io, cmd: cmd, key: types.NamespacedName{Namespace: ns, Name: name}, timeout: *timeout}
	return r.run(ctx, *wait)
}

// commander carries out one command on one Canary.
type commander struct {
	cl      client.Client
	io      IO
	cmd     string
	key     types.NamespacedName
	timeout time.Duration
}

func (r *commander) printf(format string, args ...any) {
	fmt.Fprintf(r.io.Out, r.cmd+": "+format+"\n", args...)
}

func (r *commander) run(ctx context.Context, wait bool) error {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()

	c, before, err := r.set(ctx)
	if err != nil {
		return err
	}
	by, stamped := c.Annotations[v1beta1.AnnotationCommandBy]
	if stamped {
		r.printf("asked coalmine to %s Canary %s (recorded as asked by %s)", r.cmd, r.key, by)
	} else {
		r.printf("asked coalmine to %s Canary %s", r.cmd, r.key)
		fmt.Fprintf(r.io.Err, "warning: coalmine's Canary webhook did not record who asked (%s is missing): is coalmine running? Its Event will name an unknown user.\n",
			v1beta1.AnnotationCommandBy)
	}
	if !wait {
		return nil
	}

	c, err = r.awaitConsumed(ctx)
	if err != nil {
		return err
	}
	events, err := r.awaitEvents(ctx, c.UID, before)
	if err != nil {
		return err
	}
	took := time.Since(start).Round(10 * time.Millisecond)
	refused := false
	for _, e := range events {
		verb := "done"
		if e.Reason == reasonCommandRefused {
			verb, refused = "refused", true
		}
		r.printf("%s in %s: %s", verb, took, e.Message)
	}
	if len(events) == 0 {
		r.printf("carried out in %s (its Event was not found; see kubectl -n %s events --for canary/%s)", took, r.key.Namespace, r.key.Name)
	}
	_ = renderTable(r.io.Out, []v1beta1.Canary{*c}, tableOptions{now: time.Now(), color: r.io.Terminal && r.io.Color})
	if refused {
		return errReported
	}
	return nil
}

// set puts the command on the Canary by a merge patch conditioned on the version just
// read, so a command already pending (someone else's, or one coalmine has not seen yet)
// is never overwritten. It returns the Canary as stored (with the webhook's stamp) and
// the command Events the Canary had before.
func (r *commander) set(ctx context.Context) (*v1beta1.Canary, map[types.UID]string, error) {
	for attempt := 0; ; attempt++ {
		c := &v1beta1.Canary{}
		if err := r.cl.Get(ctx, r.key, c); err != nil {
			if apierrors.IsNotFound(err) {
				return nil, nil, fmt.Errorf("Canary %s not found", r.key)
			}
			return nil, nil, fmt.Errorf("get Canary %s: %w", r.key, err)
		}
		if pending := c.Annotations[v1beta1.AnnotationCommand]; pending != "" {
			by := c.Annotations[v1beta1.AnnotationCommandBy]
			if by == "" {
				by = "an unrecorded user"
			}
			return nil, nil, fmt.Errorf("Canary %s already has command %s pending (asked by %s): coalmine carries it out at its next pass. "+
				"If coalmine is not running, remove it with `kubectl -n %s annotate canary %s %s-`",
				r.key, pending, by, r.key.Namespace, r.key.Name, v1beta1.AnnotationCommand)
		}
		before, err := commandEvents(ctx, r.cl, r.key.Namespace, c.UID)
		if err != nil {
			return nil, nil, err
		}
		patch, err := json.Marshal(map[string]any{"metadata": map[string]any{
			"resourceVersion": c.ResourceVersion,
			"annotations":     map[string]any{v1beta1.AnnotationCommand: r.cmd},
		}})
		if err != nil {
			return nil, nil, err
		}
		err = r.cl.Patch(ctx, c, client.RawPatch(types.MergePatchType, patch))
		switch {
		case err == nil:
			return c, before, nil
		case apierrors.IsConflict(err) && attempt < conflictRetries:
			continue
		case apierrors.IsForbidden(err):
			return nil, nil, fmt.Errorf("not allowed to patch Canary %s (the ClusterRole coalmine-operator grants it): %w", r.key, err)
		default:
			return nil, nil, fmt.Errorf("set %s=%s on Canary %s: %w", v1beta1.AnnotationCommand, r.cmd, r.key, err)
		}
	}
}

// awaitConsumed waits until the loop has removed the command.
func (r *commander) awaitConsumed(ctx context.Context) (*v1beta1.Canary, error) {
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		c := &v1beta1.Canary{}
		err := r.cl.Get(ctx, r.key, c)
		switch {
		case apierrors.IsNotFound(err):
			return nil, fmt.Errorf("Canary %s was deleted before coalmine carried out %s", r.key, r.cmd)
		case err == nil && c.Annotations[v1beta1.AnnotationCommand] == "":
			return c, nil
		case err != nil && ctx.Err() == nil:
			return nil, fmt.Errorf("get Canary %s: %w", r.key, err)
		}
		select {
		case <-ctx.Done():
			fmt.Fprintf(r.io.Err, "%s: coalmine did not carry out %s on Canary %s within %s: the annotation %s is still set.\n"+
				"Is coalmine running (kubectl -n coalmine-system get pods)? The command stays set and runs when coalmine next sees the Canary;\n"+
				"to take it back: kubectl -n %s annotate canary %s %s-\n",
				r.cmd, r.cmd, r.key, r.timeout, v1beta1.AnnotationCommand, r.key.Namespace, r.key.Name, v1beta1.AnnotationCommand)
			return nil, errReported
		case <-tick.C:
		}
	}
}

// awaitEvents waits, briefly, for the command Events the loop recorded after before.
func (r *commander) awaitEvents(ctx context.Context, uid types.UID, before map[types.UID]string) ([]corev1.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, eventGrace)
	defer cancel()
	tick := time.NewTicker(pollEvery)
	defer tick.Stop()
	for {
		now, err := commandEventList(ctx, r.cl, r.key.Namespace, uid)
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		if fresh := newEvents(now, before); len(fresh) > 0 {
			return fresh, nil
		}
		select {
		case <-ctx.Done():
			return nil, nil
		case <-tick.C:
		}
	}
}

// commandEventList lists the command Events of the Canary with uid (the loop records
// them with events.k8s.io; the core API serves the same objects).
func commandEventList(ctx context.Context, cl client.Client, ns string, uid types.UID) ([]corev1.Event, error) {
	list := &corev1.EventList{}
	if err := cl.List(ctx, list, client.InNamespace(ns),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.uid", string(uid))}); err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("not allowed to list Events in %s (the ClusterRole coalmine-operator grants it): %w", ns, err)
		}
		return nil, fmt.Errorf("list Events of the Canary: %w", err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.Reason == reasonCommand || e.Reason == reasonCommandRefused {
			out = append(out, e)
		}
	}
	return out, nil
}

// commandEvents are the command Events of a Canary by UID, with their resource versions.
func commandEvents(ctx context.Context, cl client.Client, ns string, uid types.UID) (map[types.UID]string, error) {
	list, err := commandEventList(ctx, cl, ns, uid)
	if err != nil {
		return nil, err
	}
	out := make(map[types.UID]string, len(list))
	for _, e := range list {
		out[e.UID] = e.ResourceVersion
	}
	return out, nil
}

// newEvents are the events of now that are not in before: new ones, and ones updated
// since (a repeated Event is counted on the same object), oldest first.
func newEvents(now []corev1.Event, before map[types.UID]string) []corev1.Event {
	var out []corev1.Event
	for _, e := range now {
		if rv, seen := before[e.UID]; !seen || rv != e.ResourceVersion {
			out = append(out, e)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return eventTime(&out[i]).Before(eventTime(&out[j])) })
	return out
}

func eventTime(e *corev1.Event) time.Time {
	switch {
	case e.Series != nil && !e.Series.LastObservedTime.IsZero():
		return e.Series.LastObservedTime.Time
	case !e.LastTimestamp.IsZero():
		return e.LastTimestamp.Time
	case !e.EventTime.IsZero():
		return e.EventTime.Time
	}
	return e.CreationTimestamp.Time
}
