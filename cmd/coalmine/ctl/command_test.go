package ctl

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func fakeCluster(t *testing.T, objs ...client.Object) client.WithWatch {
	t.Helper()
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithIndex(&corev1.Event{}, "involvedObject.uid", func(o client.Object) []string {
			return []string{string(o.(*corev1.Event).InvolvedObject.UID)}
		}).
		WithIndex(&v1beta1.Canary{}, "metadata.name", func(o client.Object) []string { return []string{o.GetName()} }).
		Build()
}

// fakeLoop plays the progression loop once: it waits for the command, records an Event
// (reason, note with the stamp), and removes the annotations.
func fakeLoop(ctx context.Context, t *testing.T, cl client.Client, key types.NamespacedName, reason, note string) {
	go func() {
		for ctx.Err() == nil {
			c := &v1beta1.Canary{}
			if err := cl.Get(ctx, key, c); err == nil && c.Annotations[v1beta1.AnnotationCommand] != "" {
				ev := &corev1.Event{
					ObjectMeta:     metav1.ObjectMeta{Namespace: key.Namespace, Name: key.Name + ".cmd", UID: "event-1"},
					InvolvedObject: corev1.ObjectReference{Kind: "Canary", Namespace: key.Namespace, Name: key.Name, UID: c.UID},
					Reason:         reason, Message: note, Type: corev1.EventTypeNormal,
				}
				if err := cl.Create(ctx, ev); err != nil {
					t.Errorf("record event: %v", err)
				}
				delete(c.Annotations, v1beta1.AnnotationCommand)
				delete(c.Annotations, v1beta1.AnnotationCommandBy)
				if err := cl.Update(ctx, c); err != nil {
					t.Errorf("clear command: %v", err)
				}
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
}

func aliceProgressing() *v1beta1.Canary {
	c := progressing()
	c.UID = "alice-uid"
	return &c
}

func TestCommandWaitsForTheLoopAndPrintsItsEvent(t *testing.T) {
	c := aliceProgressing()
	cl := fakeCluster(t, c)
	key := client.ObjectKeyFromObject(c)
	fakeLoop(t.Context(), t, cl, key, reasonCommand, "Analysis paused by jane@example.com at canary weight 15%")
	var out, errOut bytes.Buffer
	r := &commander{cl: cl, io: IO{Out: &out, Err: &errOut}, cmd: v1beta1.CommandPause, key: key, timeout: 10 * time.Second}
	if err := r.run(t.Context(), true); err != nil {
		t.Fatalf("run: %v\n%s%s", err, out.String(), errOut.String())
	}
	for _, want := range []string{
		"pause: asked coalmine to pause Canary apps-a-mesh-a/alice",
		"pause: done in ",
		": Analysis paused by jane@example.com at canary weight 15%",
		"NAME   PHASE", // the Canary as it is now
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	// Without the Canary webhook (the fake has none) the user is told the stamp is missing.
	if !strings.Contains(errOut.String(), "did not record who asked") {
		t.Errorf("stderr %q, want the missing stamp named", errOut.String())
	}
}

func TestCommandRefusedFails(t *testing.T) {
	c := aliceProgressing()
	cl := fakeCluster(t, c)
	key := client.ObjectKeyFromObject(c)
	fakeLoop(t.Context(), t, cl, key, reasonCommandRefused, `Command "retry" from jane refused: it does not apply in phase Progressing`)
	var out bytes.Buffer
	r := &commander{cl: cl, io: IO{Out: &out, Err: &out}, cmd: v1beta1.CommandRetry, key: key, timeout: 10 * time.Second}
	if err := r.run(t.Context(), true); !errors.Is(err, errReported) {
		t.Fatalf("run: %v, want it reported as failed", err)
	}
	if !strings.Contains(out.String(), "retry: refused in ") || !strings.Contains(out.String(), "does not apply in phase Progressing") {
		t.Errorf("output:\n%s", out.String())
	}
}

func TestCommandDoesNotOverwriteAPendingOne(t *testing.T) {
	c := aliceProgressing()
	c.Annotations[v1beta1.AnnotationCommand] = v1beta1.CommandPause
	c.Annotations[v1beta1.AnnotationCommandBy] = "bob"
	cl := fakeCluster(t, c)
	var out bytes.Buffer
	r := &commander{cl: cl, io: IO{Out: &out, Err: &out}, cmd: v1beta1.CommandAbort, key: client.ObjectKeyFromObject(c), timeout: time.Second}
	err := r.run(t.Context(), true)
	if err == nil || !strings.Contains(err.Error(), "already has command pause pending (asked by bob)") {
		t.Fatalf("run: %v, want the pending command named", err)
	}
	got := &v1beta1.Canary{}
	_ = cl.Get(t.Context(), client.ObjectKeyFromObject(c), got)
	if got.Annotations[v1beta1.AnnotationCommand] != v1beta1.CommandPause {
		t.Errorf("command %q, want bob's pause kept", got.Annotations[v1beta1.AnnotationCommand])
	}
}

func TestCommandTimesOutWithoutTheLoop(t *testing.T) {
	c := aliceProgressing()
	cl := fakeCluster(t, c)
	var out, errOut bytes.Buffer
	r := &commander{cl: cl, io: IO{Out: &out, Err: &errOut}, cmd: v1beta1.CommandPromote, key: client.ObjectKeyFromObject(c), timeout: 500 * time.Millisecond}
	if err := r.run(t.Context(), true); !errors.Is(err, errReported) {
		t.Fatalf("run: %v, want a reported failure", err)
	}
	if !strings.Contains(errOut.String(), "coalmine did not carry out promote") || !strings.Contains(errOut.String(), "annotate canary alice coalmine.dev/command-") {
		t.Errorf("stderr:\n%s", errOut.String())
	}
}

func TestNewEvents(t *testing.T) {
	ev := func(uid, rv string, at time.Time) corev1.Event {
		return corev1.Event{ObjectMeta: metav1.ObjectMeta{UID: types.UID(uid), ResourceVersion: rv}, EventTime: metav1.MicroTime{Time: at}}
	}
	before := map[types.UID]string{"a": "1", "b": "2"}
	got := newEvents([]corev1.Event{ev("a", "1", now), ev("b", "5", now.Add(time.Second)), ev("c", "6", now)}, before)
	if len(got) != 2 || got[0].UID != "c" || got[1].UID != "b" {
		t.Errorf("new events %v, want c (new) then b (repeated since)", got)
	}
}

func TestRunUsage(t *testing.T) {
	for _, tt := range []struct {
		args []string
		code int
		want string
	}{
		{nil, exitUsage, "Usage:"},
		{[]string{"help"}, exitOK, "coalmine promote"},
		{[]string{"promote"}, exitUsage, "which Canary?"},
		{[]string{"abort", "a", "b"}, exitUsage, "one Canary at a time"},
		{[]string{"status", "-A", "alice"}, exitUsage, "do not go together"},
		{[]string{"pause", "--bogus", "alice"}, exitUsage, "unknown flag: --bogus"},
		{[]string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{[]string{"resume", "--help"}, exitOK, "continue a paused analysis"},
	} {
		var out bytes.Buffer
		if code := Run(t.Context(), "coalmine", tt.args, IO{Out: &out, Err: &out}); code != tt.code || !strings.Contains(out.String(), tt.want) {
			t.Errorf("coalmine %v: exit %d, want %d; output lacks %q:\n%s", tt.args, code, tt.code, tt.want, out.String())
		}
	}
}
