package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/pflag"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// redrawEvery is how often --watch redraws a terminal when nothing changed: the ages move.
const redrawEvery = time.Second

func runStatus(ctx context.Context, prog string, args []string, io IO) error {
	var conn connection
	fs := newFlagSet(prog, "status", io, &conn)
	all := fs.BoolP("all-namespaces", "A", false, "Canaries of every namespace")
	watchFlag := fs.BoolP("watch", "w", false, "keep watching: redraw on a terminal, else print a line for each change")
	fs.Usage = func() {
		fmt.Fprintf(io.Err, `Show Canaries: phase, canary weight, failed checks against the threshold, the revision, the
time in the phase (AGE), and each metric's last value against its threshold.

Usage:
  %s status [-n NAMESPACE | -A] [NAME] [--watch]

Flags:
%s`, prog, fs.FlagUsages())
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return err
		}
		return usageError{err}
	}
	name := ""
	switch fs.NArg() {
	case 0:
	case 1:
		name = fs.Arg(0)
	default:
		return usagef("at most one Canary name, got %s", strings.Join(fs.Args(), " "))
	}
	if *all && name != "" {
		return usagef("a name and --all-namespaces do not go together")
	}
	cl, ns, err := conn.client(io)
	if err != nil {
		return err
	}
	if *all {
		ns = ""
	}
	v := statusView{cl: cl, namespace: ns, name: name, io: io}
	if *watchFlag {
		return v.watch(ctx)
	}
	return v.once(ctx)
}

// statusView is what `status` shows: the Canaries of a namespace (all when empty), or one.
type statusView struct {
	cl        client.WithWatch
	namespace string
	name      string
	io        IO
	now       func() time.Time
}

func (v *statusView) clock() time.Time {
	if v.now != nil {
		return v.now()
	}
	return time.Now()
}

func (v *statusView) options() tableOptions {
	return tableOptions{now: v.clock(), allNamespaces: v.namespace == "" && v.name == "", color: v.io.Terminal && v.io.Color}
}

func (v *statusView) list(ctx context.Context) ([]v1beta1.Canary, string, error) {
	list := &v1beta1.CanaryList{}
	opts := []client.ListOption{}
	if v.namespace != "" {
		opts = append(opts, client.InNamespace(v.namespace))
	}
	if v.name != "" {
		opts = append(opts, client.MatchingFields{"metadata.name": v.name})
	}
	if err := v.cl.List(ctx, list, opts...); err != nil {
		return nil, "", fmt.Errorf("list Canaries%s: %w", v.where(), err)
	}
	return list.Items, list.ResourceVersion, nil
}

func (v *statusView) where() string {
	switch {
	case v.name != "":
		return fmt.Sprintf(" named %s in namespace %s", v.name, v.namespace)
	case v.namespace != "":
		return " in namespace " + v.namespace
	}
	return ""
}

func (v *statusView) empty() string {
	if v.name != "" {
		return fmt.Sprintf("Canary %s/%s not found.\n", v.namespace, v.name)
	}
	if v.namespace == "" {
		return "No Canaries found.\n"
	}
	return fmt.Sprintf("No Canaries found in namespace %s.\n", v.namespace)
}

func (v *statusView) once(ctx context.Context) error {
	items, _, err := v.list(ctx)
	if err != nil {
		return err
	}
	if len(items) == 0 {
		fmt.Fprint(v.io.Err, v.empty())
		if v.name != "" {
			return errReported
		}
		return nil
	}
	return renderTable(v.io.Out, items, v.options())
}

// watch follows the Canaries until ctx ends: on a terminal the table is redrawn in
// place on every change and every second; elsewhere each Canary prints a summary line
// when something in it changed (not on every event, and never for ages alone).
func (v *statusView) watch(ctx context.Context) error {
	items := map[string]v1beta1.Canary{}
	var out output
	if v.io.Terminal {
		out = &screen{w: v.io.Out, title: v.title}
	} else {
		out = &changeLog{w: v.io.Out, last: map[string]string{}, clock: v.clock}
	}
	rv := ""
	tick := time.NewTicker(redrawEvery)
	defer tick.Stop()
	for ctx.Err() == nil {
		if rv == "" {
			list, listRV, err := v.list(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			clear(items)
			for _, c := range list {
				items[key(&c)] = c
			}
			rv = listRV
			out.show(items, v)
		}
		opts := []client.ListOption{&client.ListOptions{Raw: &metav1.ListOptions{ResourceVersion: rv, AllowWatchBookmarks: true}}}
		if v.namespace != "" {
			opts = append(opts, client.InNamespace(v.namespace))
		}
		if v.name != "" {
			opts = append(opts, client.MatchingFields{"metadata.name": v.name})
		}
		w, err := v.cl.Watch(ctx, &v1beta1.CanaryList{}, opts...)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if apierrors.IsResourceExpired(err) || apierrors.IsGone(err) {
				rv = ""
				continue
			}
			return fmt.Errorf("watch Canaries%s: %w", v.where(), err)
		}
		rv = v.follow(ctx, w, rv, items, out, tick.C)
	}
	return nil
}

// follow shows the events of one watch until it closes or ctx ends, and returns the
// resource version to resume from ("" to list again).
func (v *statusView) follow(ctx context.Context, w watch.Interface, rv string, items map[string]v1beta1.Canary, out output, tick <-chan time.Time) string {
	defer w.Stop()
	for {
		select {
		case <-ctx.Done():
			return rv
		case <-tick:
			out.tick(items, v)
		case ev, ok := <-w.ResultChan():
			if !ok {
				return rv
			}
			switch ev.Type {
			case watch.Error:
				if st, isStatus := ev.Object.(*metav1.Status); isStatus && (st.Code == 410 || st.Reason == metav1.StatusReasonExpired) {
					return ""
				}
				return rv
			case watch.Bookmark:
				if o, isObj := ev.Object.(client.Object); isObj {
					rv = o.GetResourceVersion()
				}
				continue
			}
			c, isCanary := ev.Object.(*v1beta1.Canary)
			if !isCanary {
				continue
			}
			rv = c.ResourceVersion
			if v.name != "" && c.Name != v.name {
				continue
			}
			if ev.Type == watch.Deleted {
				delete(items, key(c))
				out.deleted(c, items, v)
				continue
			}
			items[key(c)] = *c
			out.show(items, v)
		}
	}
}

func key(c *v1beta1.Canary) string { return c.Namespace + "/" + c.Name }

func values(items map[string]v1beta1.Canary) []v1beta1.Canary {
	out := make([]v1beta1.Canary, 0, len(items))
	for _, c := range items {
		out = append(out, c)
	}
	return out
}

func (v *statusView) title() string {
	what := "all namespaces"
	switch {
	case v.name != "":
		what = v.namespace + "/" + v.name
	case v.namespace != "":
		what = "namespace " + v.namespace
	}
	return fmt.Sprintf("Canaries in %s at %s (watching; Ctrl-C to stop)", what, v.clock().Format("15:04:05"))
}

// output is how --watch shows the Canaries.
type output interface {
	show(items map[string]v1beta1.Canary, v *statusView)
	tick(items map[string]v1beta1.Canary, v *statusView)
	deleted(c *v1beta1.Canary, items map[string]v1beta1.Canary, v *statusView)
}

// screen redraws the table in place on a terminal: the cursor goes back up over the last
// drawing, each line is rewritten and cleared to its end, so nothing flickers and the last
// table stays in the scrollback.
type screen struct {
	w     io.Writer
	title func() string
	lines int
}

func (s *screen) show(items map[string]v1beta1.Canary, v *statusView) {
	var b bytes.Buffer
	b.WriteString(s.title() + "\n\n")
	if len(items) == 0 {
		b.WriteString(v.empty())
	} else {
		_ = renderTable(&b, values(items), v.options())
	}
	var frame strings.Builder
	if s.lines > 0 {
		fmt.Fprintf(&frame, "\x1b[%dA\r", s.lines)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	for _, l := range lines {
		frame.WriteString(l + "\x1b[K\n")
	}
	frame.WriteString("\x1b[J")
	s.lines = len(lines)
	_, _ = io.WriteString(s.w, frame.String())
}

func (s *screen) tick(items map[string]v1beta1.Canary, v *statusView) { s.show(items, v) }

func (s *screen) deleted(_ *v1beta1.Canary, items map[string]v1beta1.Canary, v *statusView) {
	s.show(items, v)
}

// changeLog prints one timestamped line per Canary whenever what the line says changes.
type changeLog struct {
	w     io.Writer
	last  map[string]string
	clock func() time.Time
}

func (l *changeLog) show(items map[string]v1beta1.Canary, _ *statusView) {
	for _, c := range sortedCanaries(items) {
		line := summaryLine(&c)
		if l.last[key(&c)] == line {
			continue
		}
		l.last[key(&c)] = line
		fmt.Fprintf(l.w, "%s %s\n", l.clock().Format("15:04:05"), line)
	}
}

func (l *changeLog) tick(map[string]v1beta1.Canary, *statusView) {}

func (l *changeLog) deleted(c *v1beta1.Canary, _ map[string]v1beta1.Canary, _ *statusView) {
	delete(l.last, key(c))
	fmt.Fprintf(l.w, "%s %s deleted\n", l.clock().Format("15:04:05"), key(c))
}

func sortedCanaries(items map[string]v1beta1.Canary) []v1beta1.Canary {
	out := values(items)
	sortCanaries(out)
	return out
}
