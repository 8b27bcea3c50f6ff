package chaos

import (
	"context"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	coalminev1beta1 "github.com/coalmine-dev/coalmine/api/v1beta1"
)

// competingWriter edits the apps' Canaries' and Deployments' metadata (a label and an
// annotation, as Flux or a person labelling things would) with read-modify-write updates,
// so coalmine's optimistic-lock writes (finalizer, target) meet conflicts. Its Deployment
// updates go through the mutating webhook: they are admission calls too.
type competingWriter struct {
	w         *world
	adm       *admissions
	refs      []*appRef
	rng       *rand.Rand
	writes    atomic.Int64
	conflicts atomic.Int64
}

func (cw *competingWriter) run(ctx context.Context) {
	n := 0
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Duration(100+cw.rng.IntN(300)) * time.Millisecond):
		}
		n++
		ref := cw.refs[cw.rng.IntN(len(cw.refs))]
		key := client.ObjectKey{Namespace: ref.ns, Name: ref.name}
		stamp := strconv.Itoa(n)
		var err error
		if cw.rng.IntN(10) < 7 {
			c := &coalminev1beta1.Canary{}
			if err = cw.w.zc.Get(ctx, key, c); err != nil {
				continue
			}
			touch(&c.ObjectMeta.Labels, stamp)
			touch(&c.ObjectMeta.Annotations, time.Now().Format(time.RFC3339Nano))
			err = cw.w.zc.Update(ctx, c)
		} else {
			d := &appsv1.Deployment{}
			if err = cw.w.zc.Get(ctx, key, d); err != nil {
				continue
			}
			touch(&d.ObjectMeta.Annotations, stamp)
			start := time.Now()
			err = cw.w.zc.Update(ctx, d)
			if d.Labels[coalminev1beta1.LabelManaged] == "true" {
				cw.adm.record("writer", start, time.Now(), err)
			}
		}
		switch {
		case err == nil:
			cw.writes.Add(1)
		case apierrors.IsConflict(err):
			cw.conflicts.Add(1)
		}
	}
}

func touch(m *map[string]string, v string) {
	if *m == nil {
		*m = map[string]string{}
	}
	(*m)[touchKey] = v
}

// prober sends a server-side dry-run template change of a managed Deployment every
// 250 ms: the mutating webhook must answer each (the dry run stores nothing), so the
// admission count does not depend on when the apps happen to ship.
type prober struct {
	w     *world
	adm   *admissions
	refs  []*appRef
	rng   *rand.Rand
	calls atomic.Int64
}

func (p *prober) run(ctx context.Context) {
	n := 0
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n++
		ref := p.refs[p.rng.IntN(len(p.refs))]
		d := &appsv1.Deployment{}
		if err := p.w.zc.Get(ctx, client.ObjectKey{Namespace: ref.ns, Name: ref.name}, d); err != nil {
			continue
		}
		if d.Labels[coalminev1beta1.LabelManaged] != "true" {
			continue
		}
		if d.Spec.Template.Annotations == nil {
			d.Spec.Template.Annotations = map[string]string{}
		}
		d.Spec.Template.Annotations["chaos.coalmine.dev/probe"] = strconv.Itoa(n)
		start := time.Now()
		err := p.w.zc.Update(ctx, d, client.DryRunAll)
		p.adm.record("probe", start, time.Now(), err)
		p.calls.Add(1)
	}
}
