package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
	"github.com/coalmine-dev/coalmine/cmd/coalmine/ctl"
	"github.com/coalmine-dev/coalmine/manifests"
	"github.com/coalmine-dev/coalmine/rollout"
	"github.com/coalmine-dev/coalmine/sandbox"
)

// The operator commands (coalmine status, promote, abort, retry, pause, resume) against
// the sandbox: coalmine runs in-process under its ServiceAccount with the shipped
// webhooks; the commands run as ctl.Run does for `coalmine ...`, with a kubeconfig file,
// as jane (a user bound to the shipped ClusterRole coalmine-operator, through
// impersonation) or as the sandbox's admin. Each checks the command's effect on the
// weights and the phase, that the Event names the user who asked (stamped by the Canary
// webhook from the request) and that the annotation is gone.

// operatorUser is bound to ClusterRole coalmine-operator and nothing else.
const operatorUser = "jane@example.com"

// commandTimeout bounds each command's wait for the loop.
const commandTimeout = "60s"

type operators struct {
	jane  string // kubeconfig acting as operatorUser
	admin string // the admin's kubeconfig
	// adminUser is the sandbox admin's user name, as the apiserver authenticates it.
	adminUser string
}

// setUpOperators installs the shipped coalmine-operator ClusterRole, binds operatorUser to
// it and writes the kubeconfigs the commands use.
func setUpOperators(t *testing.T) *operators {
	t.Helper()
	ctx := testContext(t, time.Minute)
	objs, err := parseYAML(manifests.OperatorRole)
	if err != nil || len(objs) != 1 {
		t.Fatalf("parse rbac/operator.yaml: %v (%d objects)", err, len(objs))
	}
	apply(t, objs[0])
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "coalmine-e2e-operator-jane"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "coalmine-operator"},
		Subjects:   []rbacv1.Subject{{APIGroup: rbacv1.GroupName, Kind: rbacv1.UserKind, Name: operatorUser}},
	}
	apply(t, binding)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := k8s.Delete(ctx, binding); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete %s: %v", binding.Name, err)
		}
	})
	jane, err := sb.KubeconfigFor(operatorUser)
	if err != nil {
		t.Fatal(err)
	}
	review := &authenticationv1.SelfSubjectReview{}
	if err := k8s.Create(ctx, review); err != nil {
		t.Fatalf("who is the admin: %v", err)
	}
	o := &operators{jane: jane, admin: sb.KubeconfigPath, adminUser: review.Status.UserInfo.Username}
	if o.adminUser == "" {
		t.Fatal("the admin's SelfSubjectReview names no user")
	}
	// RBAC allows exactly what the role says: jane reads and patches Canaries, not Deployments.
	janeClient := newClient(t, sb.Impersonate(operatorUser))
	err = janeClient.List(ctx, &coalminev1beta1.CanaryList{})
	if err != nil {
		t.Fatalf("%s cannot list Canaries with coalmine-operator: %v", operatorUser, err)
	}
	if err := janeClient.List(ctx, &corev1.PodList{}, client.InNamespace("default")); !apierrors.IsForbidden(err) {
		t.Fatalf("%s lists Pods (err %v): coalmine-operator must grant Canaries and Events only", operatorUser, err)
	}
	return o
}

// coalmine runs an operator command as ctl.Run does for the coalmine binary, with
// kubeconfig, and returns its output and exit code.
func (o *operators) coalmine(t *testing.T, ctx context.Context, kubeconfig string, args ...string) (string, int) {
	t.Helper()
	var out syncBuffer
	all := append(slices.Clone(args), "--kubeconfig", kubeconfig)
	if args[0] != "status" {
		all = append(all, "--timeout", commandTimeout)
	}
	code := ctl.Run(ctx, "coalmine", all, ctl.IO{Out: &out, Err: &out})
	t.Logf("$ coalmine %s  (exit %d, as %s)\n%s", strings.Join(args, " "), code, filepath.Base(kubeconfig), out.String())
	return out.String(), code
}

// must runs a command that must succeed.
func (o *operators) must(t *testing.T, ctx context.Context, kubeconfig string, args ...string) string {
	t.Helper()
	out, code := o.coalmine(t, ctx, kubeconfig, args...)
	if code != 0 {
		t.Fatalf("coalmine %s: exit %d\n%s", strings.Join(args, " "), code, out)
	}
	return out
}

// syncBuffer is a buffer written by a command while the test reads it (status --watch).
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestOperatorCommands(t *testing.T) {
	t.Parallel()
	env := sharedRollout(t)
	ops := setUpOperators(t)
	t.Run("scenarios", func(t *testing.T) {
		t.Run("Promote", func(t *testing.T) { t.Parallel(); testOperatorPromote(t, env, ops) })
		t.Run("Abort", func(t *testing.T) { t.Parallel(); testOperatorAbort(t, env, ops) })
		t.Run("Retry", func(t *testing.T) { t.Parallel(); testOperatorRetry(t, env, ops) })
		t.Run("PauseResume", func(t *testing.T) { t.Parallel(); testOperatorPauseResume(t, env, ops) })
		t.Run("RequesterCannotBeForged", func(t *testing.T) { t.Parallel(); testOperatorForgedRequester(t, env, ops) })
	})
}

// testOperatorPromote: promote mid-analysis skips the remaining steps; the revision is
// promoted (Promoting, then Succeeded) from the weight it had.
func testOperatorPromote(t *testing.T, env *rolloutEnvironment, ops *operators) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	rev := v2.Annotations[coalminev1beta1.AnnotationRevision]
	s.waitWeight(10)

	out := ops.must(t, s.ctx, ops.jane, "promote", "-n", s.ns, appName)
	want := fmt.Sprintf("Promotion of revision %s requested by %s", rev, operatorUser)
	expectOutput(t, out, "promote: asked coalmine to promote Canary "+s.ns+"/"+appName+" (recorded as asked by "+operatorUser+")", "promote: done in ", want)
	s.expectCommandConsumed(rollout.ReasonCommand, want)

	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 2*time.Minute)
	if ps := s.canary.phases(); !slices.Contains(ps, coalminev1beta1.PhasePromoting) {
		t.Errorf("phases %v, want Promoting before Succeeded", ps)
	}
	at := s.interruptedAt(10) // 10, or 15 if a step came first: never the maximum 50
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(at), []int{0}))
	s.expectPromoted(c, v2)
}

// testOperatorAbort: abort mid-analysis rolls back at once: Failed with the user named,
// the route 100% primary, the canary gone, alice paused on the shipped template with its
// pods on the old release.
func testOperatorAbort(t *testing.T, env *rolloutEnvironment, ops *operators) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	rev := v2.Annotations[coalminev1beta1.AnnotationRevision]
	s.waitWeight(10)

	out := ops.must(t, s.ctx, ops.jane, "abort", "-n", s.ns, appName)
	want := fmt.Sprintf("Rollback of revision %s requested by %s", rev, operatorUser)
	expectOutput(t, out, "abort: done in ", want)
	s.expectCommandConsumed(rollout.ReasonCommand, want)

	c := s.waitPhase(coalminev1beta1.PhaseFailed, time.Minute)
	if !strings.Contains(c.Status.Message, "aborted by "+operatorUser) {
		t.Errorf("message %q, want it to say aborted by %s", c.Status.Message, operatorUser)
	}
	if c.Status.FailedRevision != rev {
		t.Errorf("failedRevision %q, want %s", c.Status.FailedRevision, rev)
	}
	at := s.interruptedAt(10)
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(at), []int{0}))
	s.expectRouteAllPrimary()
	s.expectNoCanaryDeployment()
	target := s.target()
	if !target.Spec.Paused || target.Spec.Template.Spec.Containers[0].Image != imageV2 {
		t.Errorf("alice paused=%v on %s, want it paused on the shipped %s", target.Spec.Paused, target.Spec.Template.Spec.Containers[0].Image, imageV2)
	}
	s.expectPodsOn(imageV1, false)

	// status says why it failed.
	out = ops.must(t, s.ctx, ops.jane, "status", "-n", s.ns, appName)
	expectOutput(t, out, "Failed", rev, "aborted by "+operatorUser)
}

// testOperatorRetry: a revision aborted by the admin (a plain annotation, as kubectl
// annotate sets it) is analysed again by retry, from the first step, and promoted.
func testOperatorRetry(t *testing.T, env *rolloutEnvironment, ops *operators) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	rev := v2.Annotations[coalminev1beta1.AnnotationRevision]
	s.waitWeight(5)
	s.annotate(k8s, map[string]any{coalminev1beta1.AnnotationCommand: coalminev1beta1.CommandAbort})
	s.waitPhase(coalminev1beta1.PhaseFailed, time.Minute)
	s.expectCommandConsumed(rollout.ReasonCommand, fmt.Sprintf("Rollback of revision %s requested by %s", rev, ops.adminUser))

	out := ops.must(t, s.ctx, ops.admin, "retry", "-n", s.ns, appName)
	want := fmt.Sprintf("Retry of revision %s requested by %s", rev, ops.adminUser)
	expectOutput(t, out, "retry: done in ", want)
	s.expectCommandConsumed(rollout.ReasonCommand, want)
	s.waitPhase(coalminev1beta1.PhaseProgressing, time.Minute)

	// retry where it does not apply is refused, with exit code 1, and removed all the same.
	out, code := ops.coalmine(t, s.ctx, ops.admin, "retry", "-n", s.ns, appName)
	if code != 1 || !strings.Contains(out, "retry: refused in ") || !strings.Contains(out, `Command "retry" from `+ops.adminUser+" refused") {
		t.Errorf("retry while progressing: exit %d, want 1 and the refusal:\n%s", code, out)
	}
	s.expectCommandConsumed(rollout.ReasonCommandRefused, `Command "retry" from `+ops.adminUser+" refused")

	c := s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	ps := s.canary.phases()
	if i := slices.Index(ps, coalminev1beta1.PhaseFailed); i < 0 || i+1 >= len(ps) || ps[i+1] != coalminev1beta1.PhaseProgressing {
		t.Errorf("phases %v, want Failed then Progressing", ps)
	}
	aborted := s.interruptedAt(5)
	s.expectWeights(weightSeq([]int{0}, stepsUpTo(aborted), []int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)
}

// testOperatorPauseResume: pause holds the weight across intervals (no step, no check),
// status shows the hold and who asked; resume continues to the end, no step skipped. The
// kubectl plugin shows the same status, and status --watch prints the changes.
func testOperatorPauseResume(t *testing.T, env *rolloutEnvironment, ops *operators) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	v2 := s.ship(imageV2, nil)
	rev := v2.Annotations[coalminev1beta1.AnnotationRevision]
	s.waitWeight(10)

	// status --watch, not on a terminal: a line per change, from now to the end.
	watchCtx, stopWatch := context.WithCancel(s.ctx)
	var watchOut syncBuffer
	watchDone := make(chan int, 1)
	go func() {
		watchDone <- ctl.Run(watchCtx, "coalmine", []string{"status", "-n", s.ns, appName, "--watch", "--kubeconfig", ops.jane},
			ctl.IO{Out: &watchOut, Err: &watchOut})
	}()

	out := ops.must(t, s.ctx, ops.jane, "pause", "-n", s.ns, appName)
	expectOutput(t, out, "pause: done in ", "Analysis paused by "+operatorUser+" at canary weight")
	s.expectCommandConsumed(rollout.ReasonCommand, "Analysis paused by "+operatorUser)
	held := s.get()
	if !meta.IsStatusConditionTrue(held.Status.Conditions, rollout.ConditionPaused) {
		t.Fatalf("condition Paused not True after pause: %+v", held.Status.Conditions)
	}
	w := held.Status.CanaryWeight
	if w != 10 && w != 15 {
		t.Fatalf("paused at weight %d, want 10 (or 15 if a step came first)", w)
	}

	// Three intervals later nothing moved: the weight, the route, the checks.
	time.Sleep(3*analysisInterval + time.Second)
	c := s.get()
	if c.Status.CanaryWeight != w || c.Status.Iterations != held.Status.Iterations || c.Status.Phase != coalminev1beta1.PhaseProgressing {
		t.Errorf("while paused: phase %s weight %d iterations %d, want Progressing at %d with %d iterations",
			c.Status.Phase, c.Status.CanaryWeight, c.Status.Iterations, w, held.Status.Iterations)
	}
	if got, _ := s.route.current(); got != w {
		t.Errorf("route at %d%% while paused at %d%%", got, w)
	}
	if ws := s.canary.weights(); ws[len(ws)-1] != w {
		t.Errorf("weights %v moved while paused at %d", ws, w)
	}

	// status shows the hold, how long it has held and who asked.
	out = ops.must(t, s.ctx, ops.jane, "status", "-n", s.ns, appName)
	expectOutput(t, out,
		"NAME   PHASE", "METRIC", "THRESHOLD", "RESULT",
		"Progressing (paused)", fmt.Sprintf("%3d%%", w), rev,
		coalminev1beta1.MetricRequestSuccessRate, ">= 99%", coalminev1beta1.MetricRequestDuration, "<= 500ms", "passed",
		"held for ", "paused by "+operatorUser, "resume with `coalmine resume -n "+s.ns+" "+appName+"`")
	// The same through kubectl, as its plugin, with the kubeconfig from $KUBECONFIG.
	plugin := kubectlPlugin(t, s.ctx, ops.jane, "coalmine", "status", "-n", s.ns)
	expectOutput(t, plugin, appName, "Progressing (paused)", coalminev1beta1.MetricRequestSuccessRate)
	all := ops.must(t, s.ctx, ops.jane, "status", "-A")
	expectOutput(t, all, "NAMESPACE")
	// Columns are as wide as the longest namespace of the cluster, which other scenarios
	// running at the same time decide.
	if !regexp.MustCompile(regexp.QuoteMeta(s.ns) + `\s+` + appName + `\s`).MatchString(all) {
		t.Errorf("status -A lacks a row for %s/%s:\n%s", s.ns, appName, all)
	}

	out = ops.must(t, s.ctx, ops.jane, "resume", "-n", s.ns, appName)
	expectOutput(t, out, "resume: done in ", "Analysis resumed by "+operatorUser)
	s.expectCommandConsumed(rollout.ReasonCommand, "Analysis resumed by "+operatorUser)
	if meta.IsStatusConditionTrue(s.get().Status.Conditions, rollout.ConditionPaused) {
		t.Errorf("condition Paused still True after resume")
	}

	c = s.waitPhase(coalminev1beta1.PhaseSucceeded, 3*time.Minute)
	s.expectWeights(weightSeq([]int{0}, seedSteps(), []int{0}))
	s.expectPromoted(c, v2)
	out = ops.must(t, s.ctx, ops.jane, "status", "-n", s.ns, appName)
	expectOutput(t, out, "Succeeded", "  0%", rev)

	// The watch printed each change once: the pause, the steps after it, the promotion.
	time.Sleep(time.Second)
	stopWatch()
	if code := <-watchDone; code != 0 {
		t.Errorf("status --watch exit %d", code)
	}
	lines := strings.Split(strings.TrimSpace(watchOut.String()), "\n")
	t.Logf("$ coalmine status -n %s %s --watch  (not a terminal)\n%s", s.ns, appName, watchOut.String())
	var shown []string
	stamp := regexp.MustCompile(`^\d\d:\d\d:\d\d `)
	for i, l := range lines {
		if !stamp.MatchString(l) {
			t.Errorf("watch line %q has no time", l)
			continue
		}
		body := stamp.ReplaceAllString(l, "")
		if i > 0 && body == shown[len(shown)-1] {
			t.Errorf("watch printed the same line twice: %q", body)
		}
		shown = append(shown, body)
	}
	joined := strings.Join(shown, "\n")
	for _, want := range []string{"Progressing (paused) weight=" + fmt.Sprint(w) + "%", "Progressing weight=50%", "Succeeded weight=0%"} {
		if !strings.Contains(joined, want) {
			t.Errorf("watch output lacks %q", want)
		}
	}
}

// testOperatorForgedRequester: a command whose request writes someone else's name into
// coalmine.dev/command-by is recorded as asked by the request's user; a command that does
// not apply is refused with an Event naming that user, and removed all the same.
func testOperatorForgedRequester(t *testing.T, env *rolloutEnvironment, ops *operators) {
	s := newScenario(t, env, scenarioOptions{})
	s.deploy()
	jane := newClient(t, sb.Impersonate(operatorUser))
	s.annotate(jane, map[string]any{
		coalminev1beta1.AnnotationCommand:   coalminev1beta1.CommandResume,
		coalminev1beta1.AnnotationCommandBy: "mallory@example.com",
	})
	want := fmt.Sprintf(`Command "resume" from %s refused: the analysis is not paused`, operatorUser)
	s.expectCommandConsumed(rollout.ReasonCommandRefused, want)
	if evs := s.commandEvents(); slices.ContainsFunc(evs, func(e corev1.Event) bool { return strings.Contains(e.Message, "mallory") }) {
		t.Errorf("an Event names the forged requester: %v", evs)
	}
	// An unknown command is refused by the Canary validator before it is stored.
	err := jane.Patch(s.ctx, s.get(), client.RawPatch(types.MergePatchType,
		[]byte(`{"metadata":{"annotations":{"`+coalminev1beta1.AnnotationCommand+`":"promte"}}}`)))
	if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), "promte") {
		t.Errorf("unknown command: %v, want it refused as Invalid", err)
	}
}

// annotate merge-patches the Canary's annotations as c's user, as kubectl annotate does.
func (s *scenario) annotate(c client.Client, ann map[string]any) {
	s.t.Helper()
	cur := s.get()
	patch := fmt.Sprintf(`{"metadata":{"annotations":%s}}`, mustJSONString(s.t, ann))
	if err := c.Patch(s.ctx, cur, client.RawPatch(types.MergePatchType, []byte(patch))); err != nil {
		s.t.Fatalf("annotate canary: %v", err)
	}
}

// commandEvents are the operator command Events of the scenario's Canary.
func (s *scenario) commandEvents() []corev1.Event {
	s.t.Helper()
	list := &corev1.EventList{}
	if err := k8s.List(s.ctx, list, client.InNamespace(s.ns),
		client.MatchingFieldsSelector{Selector: fields.OneTermEqualSelector("involvedObject.name", appName)}); err != nil {
		s.t.Fatalf("list events: %v", err)
	}
	var out []corev1.Event
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Canary" && (e.Reason == rollout.ReasonCommand || e.Reason == rollout.ReasonCommandRefused) {
			out = append(out, e)
		}
	}
	return out
}

// expectCommandConsumed waits for an Event of reason whose message contains want, and
// checks that the command annotations are gone.
func (s *scenario) expectCommandConsumed(reason, want string) {
	s.t.Helper()
	s.await(30*time.Second, fmt.Sprintf("a %s Event saying %q", reason, want), func(context.Context) (bool, error) {
		var seen []string
		for _, e := range s.commandEvents() {
			if e.Reason == reason && strings.Contains(e.Message, want) {
				return true, nil
			}
			seen = append(seen, e.Reason+": "+e.Message)
		}
		return false, fmt.Errorf("command events %q", seen)
	})
	s.await(30*time.Second, "command annotations removed", func(ctx context.Context) (bool, error) {
		c := &coalminev1beta1.Canary{}
		if err := k8s.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: appName}, c); err != nil {
			return false, err
		}
		for _, k := range []string{coalminev1beta1.AnnotationCommand, coalminev1beta1.AnnotationCommandBy} {
			if v, ok := c.Annotations[k]; ok {
				return false, fmt.Errorf("%s=%q still set", k, v)
			}
		}
		return true, nil
	})
}

func expectOutput(t *testing.T, out string, wants ...string) {
	t.Helper()
	for _, w := range wants {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
}

func mustJSONString(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var (
	pluginOnce sync.Once
	pluginDir  string
	pluginErr  error
)

// kubectlPlugin runs the sandbox's kubectl with the kubectl-coalmine plugin (built once
// from cmd/kubectl-coalmine) on its PATH and KUBECONFIG=kubeconfig, and returns its output.
func kubectlPlugin(t *testing.T, ctx context.Context, kubeconfig string, args ...string) string {
	t.Helper()
	pluginOnce.Do(func() {
		root, err := sandbox.RepoRoot()
		if err != nil {
			pluginErr = err
			return
		}
		pluginDir = filepath.Join(sb.Dir, "plugins")
		goBin, err := exec.LookPath("go")
		if err != nil {
			goBin = filepath.Join(runtime.GOROOT(), "bin", "go")
		}
		build := exec.CommandContext(ctx, goBin, "build", "-o", filepath.Join(pluginDir, "kubectl-coalmine"), "./cmd/kubectl-coalmine")
		build.Dir = root
		start := time.Now()
		if out, err := build.CombinedOutput(); err != nil {
			pluginErr = fmt.Errorf("build kubectl-coalmine: %w\n%s", err, out)
			return
		}
		t.Logf("built kubectl-coalmine in %s", time.Since(start).Round(time.Millisecond))
	})
	if pluginErr != nil {
		t.Fatal(pluginErr)
	}
	cmd := exec.CommandContext(ctx, sb.Kubectl, args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfig, "PATH="+pluginDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	t.Logf("$ kubectl %s\n%s", strings.Join(args, " "), out)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
