package ctl

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/spf13/pflag"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// What migrate reads of Flagger's objects (Flagger is never imported: these are the names
// its Kuma provider writes).
var (
	flaggerCanaryGVK = schema.GroupVersionKind{Group: "flagger.app", Version: "v1beta1", Kind: "Canary"}
	trafficRouteGVK  = schema.GroupVersionKind{Group: "kuma.io", Version: "v1alpha1", Kind: "TrafficRoute"}
)

const (
	// flaggerFinalizer is on a Flagger Canary with spec.revertOnDeletion: Flagger then
	// reverts the target itself when the Canary goes, racing migrate.
	flaggerFinalizer = "finalizer.flagger.app"
	// defaultMigrateTimeout bounds the whole migration: two Deployment roll-outs (the
	// target scaled up, coalmine's initialization) and the drain.
	defaultMigrateTimeout = 10 * time.Minute
	// defaultDrain is how long the primary's pods stay up after no Service selects them:
	// Kuma's control plane has to drop them from the callers' Envoys first.
	defaultDrain = 15 * time.Second
)

func migrateUsage(prog string, fs *pflag.FlagSet) string {
	return fmt.Sprintf(`%[1]s migrate: hand an app Flagger has initialised over to coalmine, without a
failed request.

Usage:
  %[1]s migrate [-n NAMESPACE] NAME

NAME is the Flagger Canary (flagger.app/v1beta1). It must be Initialized or Succeeded (no
analysis under way) with spec.revertOnDeletion false. In this order, each step waiting
for the previous one:
  1. the Flagger Canary is deleted with propagationPolicy Orphan: Flagger stops, and its
     <app>-primary Deployment, Services and TrafficRoute stay and keep serving;
  2. the Deployment NAME, which Flagger scaled to 0, is scaled to the primary's replicas
     and waited for until ready (it runs the template the primary runs);
  3. the coalmine Canary NAME is created from the Flagger Canary's spec (only apiVersion
     changed) and waited for until Initialized: coalmine adopts the Services, the apex and
     <apex>-primary now select NAME's pods, and its route sends 100%% to <apex>-primary;
  4. Flagger's TrafficRoute <apex> is deleted (on the Global CP with --mesh-kubeconfig):
     left there it would shadow coalmine's;
  5. once no EndpointSlice lists a pod of <app>-primary, and --drain later, the
     <app>-primary Deployment and Flagger's <app>-primary HPA are deleted.
Run again after a failure: the steps already done are skipped (between steps 1 and 3,
the Canary to create is kept in the annotation %[3]s of <app>-primary). Keep Flux from
re-applying the Flagger Canary meanwhile (suspend the Kustomization).

Flags:
%[2]s`, prog, fs.FlagUsages(), annotationMigrateCanary)
}

func runMigrate(ctx context.Context, prog string, args []string, io IO) error {
	var conn connection
	fs := newFlagSet(prog, "migrate", io, &conn)
	timeout := fs.Duration("timeout", defaultMigrateTimeout, "how long the whole migration may take")
	drain := fs.Duration("drain", defaultDrain, "how long the primary's pods stay after no Service selects them")
	meshKubeconfig := fs.String("mesh-kubeconfig", "", "kubeconfig of the cluster holding the TrafficRoutes (the Global CP); default the app's cluster")
	fs.Usage = func() { fmt.Fprint(io.Err, migrateUsage(prog, fs)) }
	name, cl, ns, err := parseOne(fs, args, &conn, io)
	if err != nil {
		return err
	}
	routes := client.Client(cl)
	if *meshKubeconfig != "" {
		mesh := conn
		mesh.kubeconfig, mesh.context = *meshKubeconfig, ""
		if routes, _, err = mesh.client(io); err != nil {
			return fmt.Errorf("mesh control plane: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	m := &migration{cl: cl, routes: routes, io: io, key: types.NamespacedName{Namespace: ns, Name: name}, drain: *drain}
	start := time.Now()
	if err := m.run(ctx); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (after %s; --timeout %s)", err, time.Since(start).Round(time.Second), *timeout)
		}
		return err
	}
	m.printf("done in %s: Deployment %s serves through coalmine's Canary %s; nothing of Flagger's is left for it",
		time.Since(start).Round(100*time.Millisecond), m.target, m.key)
	return nil
}

// migration is one app's move from Flagger to coalmine.
type migration struct {
	cl     client.WithWatch
	routes client.Client // where Flagger's TrafficRoute is
	io     IO
	key    types.NamespacedName // both Canaries' name
	drain  time.Duration

	// From the preflight.
	flagger *unstructured.Unstructured // nil: already deleted (a re-run)
	canary  *v1beta1.Canary            // the coalmine Canary to create, or as it exists
	exists  bool                       // the coalmine Canary exists already
	target  string                     // the Deployment
	primary *appsv1.Deployment         // nil: already deleted
}

func (m *migration) printf(format string, args ...any) {
	fmt.Fprintf(m.io.Out, "migrate: "+format+"\n", args...)
}

func (m *migration) run(ctx context.Context) error {
	if err := m.preflight(ctx); err != nil {
		return err
	}
	steps := []struct {
		what string
		do   func(context.Context) error
	}{
		{"Flagger lets go", m.orphanFlagger},
		{"scale up the Deployment", m.scaleTarget},
		{"coalmine initialises", m.createCanary},
		{"delete Flagger's route", m.deleteFlaggerRoute},
		{"delete Flagger's primary", m.deletePrimary},
	}
	for i, s := range steps {
		start := time.Now()
		if err := s.do(ctx); err != nil {
			return fmt.Errorf("step %d/%d (%s): %w", i+1, len(steps), s.what, err)
		}
		m.printf("step %d/%d (%s) done in %s", i+1, len(steps), s.what, time.Since(start).Round(10*time.Millisecond))
	}
	return nil
}

// preflight reads everything and refuses, before changing anything, what the steps could
// not carry out safely.
func (m *migration) preflight(ctx context.Context) error {
	fc := &unstructured.Unstructured{}
	fc.SetGroupVersionKind(flaggerCanaryGVK)
	err := m.cl.Get(ctx, m.key, fc)
	switch {
	case meta.IsNoMatchError(err):
		fc = nil // Flagger's CRD is gone: only a re-run can go on
	case apierrors.IsNotFound(err):
		fc = nil
	case err != nil:
		return fmt.Errorf("get Flagger Canary %s: %w", m.key, err)
	}
	m.flagger = fc
	existing := &v1beta1.Canary{}
	err = m.cl.Get(ctx, m.key, existing)
	switch {
	case err == nil:
		m.exists = true
	case !apierrors.IsNotFound(err):
		return fmt.Errorf("get coalmine Canary %s: %w", m.key, err)
	}
	switch {
	case fc == nil && !m.exists:
		// Stopped between steps 1 and 3: the spec is where step 1 saved it.
		if m.canary, err = m.savedCanary(ctx); err != nil {
			return err
		}
		m.printf("Flagger Canary %s is gone already: resuming with the Canary saved on %s-primary", m.key, m.canary.Spec.TargetRef.Name)
	case fc != nil && m.exists:
		// Were the coalmine Canary to acquire the Services before the target is scaled up,
		// the apex would select no ready pod.
		return fmt.Errorf("a coalmine Canary %s exists beside Flagger's: delete it (it is created from Flagger's in step 3) and run again", m.key)
	case fc != nil:
		if m.canary, err = coalmineCanaryFrom(fc); err != nil {
			return err
		}
		if err := checkFlaggerCanary(fc); err != nil {
			return err
		}
	default:
		m.canary = existing
		m.printf("Flagger Canary %s is gone already: resuming with coalmine's Canary", m.key)
	}
	if k := m.canary.Spec.TargetRef.Kind; k != "" && k != "Deployment" {
		return fmt.Errorf("Canary %s targets a %s: migrate moves Deployments only", m.key, k)
	}
	m.target = m.canary.Spec.TargetRef.Name
	target := &appsv1.Deployment{}
	if err := m.cl.Get(ctx, m.objKey(m.target), target); err != nil {
		return fmt.Errorf("get Deployment %s: %w", m.target, err)
	}
	primary := &appsv1.Deployment{}
	err = m.cl.Get(ctx, m.objKey(m.primaryName()), primary)
	switch {
	case apierrors.IsNotFound(err):
		if !m.exists {
			return fmt.Errorf("Flagger's Deployment %s does not exist: Flagger has not initialised %s", m.primaryName(), m.key)
		}
	case err != nil:
		return fmt.Errorf("get Deployment %s: %w", m.primaryName(), err)
	default:
		if why := notReady(primary); why != "" && target.Status.ReadyReplicas == 0 {
			return fmt.Errorf("Flagger's Deployment %s is not ready (%s): it is what serves; fix it first", primary.Name, why)
		}
		if diff := imageDiff(&primary.Spec.Template.Spec, &target.Spec.Template.Spec); diff != "" {
			return fmt.Errorf("Deployment %s does not run what %s serves (%s): scaling it up would ship an unanalysed release; "+
				"let Flagger promote it or revert it in Git first", m.target, primary.Name, diff)
		}
		m.primary = primary
	}
	if !m.exists {
		// The coalmine Canary would be refused after Flagger let go: ask the apiserver now.
		if err := m.cl.Create(ctx, m.canary.DeepCopy(), client.DryRunAll); err != nil {
			return fmt.Errorf("coalmine would refuse Canary %s made from Flagger's spec: %w", m.key, err)
		}
	}
	return nil
}

func (m *migration) objKey(name string) client.ObjectKey {
	return client.ObjectKey{Namespace: m.key.Namespace, Name: name}
}

// annotationMigrateCanary on Flagger's primary Deployment holds the coalmine Canary while
// neither Canary exists (between steps 1 and 3), so a run stopped there can resume. The
// primary is Flagger's object, deleted in step 5, so the note goes with it.
const annotationMigrateCanary = v1beta1.AnnotationPrefix + "migrate-canary"

// saveCanary writes the coalmine Canary to be created onto the primary Deployment.
func (m *migration) saveCanary(ctx context.Context) error {
	if m.primary == nil {
		return nil
	}
	data, err := json.Marshal(m.canary)
	if err != nil {
		return fmt.Errorf("encode Canary %s: %w", m.key, err)
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{annotationMigrateCanary: string(data)}}})
	if err := m.cl.Patch(ctx, m.primary, client.RawPatch(types.MergePatchType, patch)); err != nil {
		return fmt.Errorf("save Canary %s on Deployment %s: %w", m.key, m.primary.Name, err)
	}
	return nil
}

// savedCanary reads what saveCanary wrote, looking for the primary by the Canary's name
// (the target's name is in the saved Canary).
func (m *migration) savedCanary(ctx context.Context) (*v1beta1.Canary, error) {
	var list appsv1.DeploymentList
	if err := m.cl.List(ctx, &list, client.InNamespace(m.key.Namespace)); err != nil {
		return nil, fmt.Errorf("list Deployments: %w", err)
	}
	for _, d := range list.Items {
		data, ok := d.Annotations[annotationMigrateCanary]
		if !ok {
			continue
		}
		c := &v1beta1.Canary{}
		if err := json.Unmarshal([]byte(data), c); err != nil {
			return nil, fmt.Errorf("read %s of Deployment %s: %w", annotationMigrateCanary, d.Name, err)
		}
		if c.Name == m.key.Name && d.Name == c.Spec.TargetRef.Name+v1beta1.PrimarySuffix {
			return c, nil
		}
	}
	return nil, fmt.Errorf("neither a Flagger Canary (flagger.app/v1beta1) nor a coalmine Canary %s exists", m.key)
}

// primaryName is Flagger's copy of the target.
func (m *migration) primaryName() string { return m.target + v1beta1.PrimarySuffix }

// checkFlaggerCanary refuses a Flagger Canary whose move would not be seamless: one
// analysing a release (its target runs a template the primary does not), one Flagger
// would revert on deletion.
func checkFlaggerCanary(fc *unstructured.Unstructured) error {
	if slices.Contains(fc.GetFinalizers(), flaggerFinalizer) {
		return fmt.Errorf("Flagger Canary %s/%s has spec.revertOnDeletion: Flagger would scale its primary away when it goes. "+
			"Set spec.revertOnDeletion: false, wait until Flagger has removed the finalizer %s, and run again", fc.GetNamespace(), fc.GetName(), flaggerFinalizer)
	}
	phase, _, _ := unstructured.NestedString(fc.Object, "status", "phase")
	if phase != "Initialized" && phase != "Succeeded" {
		return fmt.Errorf("Flagger Canary %s/%s is in phase %q: migrate only an Initialized or Succeeded one (no release under analysis)",
			fc.GetNamespace(), fc.GetName(), phase)
	}
	applied, _, _ := unstructured.NestedString(fc.Object, "status", "lastAppliedSpec")
	promoted, _, _ := unstructured.NestedString(fc.Object, "status", "lastPromotedSpec")
	if applied != "" && promoted != "" && applied != promoted {
		return fmt.Errorf("Flagger Canary %s/%s has not promoted the target's latest template (lastAppliedSpec %s, lastPromotedSpec %s): let it finish first",
			fc.GetNamespace(), fc.GetName(), applied, promoted)
	}
	return nil
}

// coalmineCanaryFrom is the Flagger Canary with only apiVersion changed: its labels,
// annotations (but kubectl's copy of the old object) and spec.
func coalmineCanaryFrom(fc *unstructured.Unstructured) (*v1beta1.Canary, error) {
	spec, _, _ := unstructured.NestedMap(fc.Object, "spec")
	c := &v1beta1.Canary{}
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(map[string]any{"spec": spec}, c, true); err != nil {
		return nil, fmt.Errorf("Flagger Canary %s/%s has a field coalmine does not declare: %w", fc.GetNamespace(), fc.GetName(), err)
	}
	c.Name, c.Namespace = fc.GetName(), fc.GetNamespace()
	c.Labels = fc.GetLabels()
	c.Annotations = fc.GetAnnotations()
	delete(c.Annotations, "kubectl.kubernetes.io/last-applied-configuration")
	return c, nil
}

// imageDiff names the first container whose image differs between two pod specs.
func imageDiff(serving, target *corev1.PodSpec) string {
	for _, s := range serving.Containers {
		i := slices.IndexFunc(target.Containers, func(c corev1.Container) bool { return c.Name == s.Name })
		switch {
		case i < 0:
			return fmt.Sprintf("container %s is missing", s.Name)
		case target.Containers[i].Image != s.Image:
			return fmt.Sprintf("container %s: %s, serving %s", s.Name, target.Containers[i].Image, s.Image)
		}
	}
	return ""
}

// notReady says why a Deployment has not rolled out all its replicas, "" when it has.
func notReady(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	if s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.ReadyReplicas == want &&
		s.AvailableReplicas == want && s.Replicas == want {
		return ""
	}
	return fmt.Sprintf("generation %d/%d, %d replicas, %d updated, %d ready, %d available, want %d",
		s.ObservedGeneration, d.Generation, s.Replicas, s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas, want)
}
