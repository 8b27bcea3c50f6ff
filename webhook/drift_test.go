package webhook

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// revBeforeUpgrade is the stable revision an older coalmine (another k8s.io/api, other
// server defaults) stamped on depV1: the same template, which hashes differently now.
const revBeforeUpgrade = "0ld5ab1e00"

// Scenario 2: after an upgrade that changes every template hash, an update that does not
// change the template is no new revision: nothing pauses and nothing warns, while a
// real template change is still intercepted.
func TestSafety02HashDriftDoesNotPause(t *testing.T) {
	upgraded := managed(depV1, revBeforeUpgrade)
	upgradedRecorded := with(upgraded, func(d *appsv1.Deployment) { d.Annotations[v1beta1.AnnotationRevision] = revBeforeUpgrade })
	userPaused := with(upgraded, func(d *appsv1.Deployment) { d.Spec.Paused = true })
	heldCanary := with(at(depV2, revBeforeUpgrade), func(d *appsv1.Deployment) { d.Annotations[v1beta1.AnnotationRevision] = "0ld2ev1s10" })

	runMutationCases(t, []mutationCase{{
		name: "replica change passes untouched",
		user: fluxUser, old: upgraded, new: with(upgraded, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(5)) }),
		want: mutationWant{untouched: true},
	}, {
		name: "Deployment label change passes untouched",
		user: adminUser, old: upgraded, new: with(upgraded, func(d *appsv1.Deployment) { d.Labels["team"] = "payments" }),
		want: mutationWant{untouched: true},
	}, {
		name: "replica change after a revert recorded the old stable revision passes untouched",
		user: fluxUser, old: upgradedRecorded, new: with(upgradedRecorded, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(5)) }),
		want: mutationWant{untouched: true},
	}, {
		name: "the user's own pause passes untouched",
		user: adminUser, old: upgraded, new: with(upgraded, func(d *appsv1.Deployment) { d.Spec.Paused = true }),
		want: mutationWant{untouched: true},
	}, {
		name: "Flux apply without coalmine's metadata only gets it back",
		user: fluxUser, old: upgraded, new: with(depV1, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(5)) }),
		want: mutationWant{paused: false, warning: "kept label coalmine.dev/managed and annotation coalmine.dev/stable-revision"},
	}, {
		name: "a real template change is still paused",
		user: fluxUser, old: upgraded, new: managed(depV2, revBeforeUpgrade),
		want: mutationWant{paused: true, revision: revV2, warning: "paused at new revision " + revV2},
	}, {
		// Paused, the old template may be a change that never rolled (scenario 12):
		// only the loop, comparing with the serving ReplicaSet, can tell.
		name: "resume of a Deployment the user paused is paused again",
		user: adminUser, old: userPaused, new: upgraded,
		want: mutationWant{paused: true, revision: revV1},
	}, {
		name: "unpause of a held canary is paused again",
		user: adminUser, old: heldCanary, new: with(heldCanary, func(d *appsv1.Deployment) { d.Spec.Paused = false }),
		want: mutationWant{paused: true, revision: revV2},
	}})
}

// Scenario 19: a GitOps tool applies a template that differs from the stored one only in
// how a field says "nothing" (an empty list here, null there; the deployment controller's
// pod-template-hash label). The hash differs, the template does not: no pause, whichever
// way round, on every apply.
func TestSafety19DroppedFieldsDoNotFlap(t *testing.T) {
	emptySources := withProjectedVolume(depV1, []corev1.VolumeProjection{})
	nullSources := withProjectedVolume(depV1, nil)
	hashLabel := with(depV1, func(d *appsv1.Deployment) {
		d.Spec.Template.Labels = map[string]string{"app": "alice", "pod-template-hash": "7d9f8b6c5"}
	})
	if rev(emptySources) == rev(nullSources) || rev(hashLabel) == revV1 {
		t.Fatal("the templates hash alike: the test no longer exercises drift")
	}

	applied := func(stored, manifest *appsv1.Deployment) mutationCase {
		return mutationCase{
			user: fluxUser, old: managed(stored, rev(stored)), new: managed(manifest, rev(stored)),
			want: mutationWant{untouched: true},
		}
	}
	cases := []mutationCase{
		applied(emptySources, nullSources),
		applied(nullSources, emptySources),
		applied(depV1, hashLabel),
		applied(hashLabel, depV1),
	}
	for i, name := range []string{
		"stored empty list, applied null",
		"stored null, applied empty list",
		"stored without pod-template-hash, applied with it",
		"stored with pod-template-hash, applied without it",
	} {
		cases[i].name = name
	}
	realChange := applied(emptySources, withProjectedVolume(depV2, nil))
	realChange.name = "a real change next to the dropped field is paused"
	realChange.want = mutationWant{paused: true, revision: rev(withProjectedVolume(depV2, nil)), warning: "paused at new revision"}
	runMutationCases(t, append(cases, realChange))
}

// withProjectedVolume is d with a projected volume whose sources are as given: "sources"
// has no omitempty, so an empty list and null encode (and hash) differently.
func withProjectedVolume(d *appsv1.Deployment, sources []corev1.VolumeProjection) *appsv1.Deployment {
	return with(d, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Volumes = []corev1.Volume{{
			Name:         "config",
			VolumeSource: corev1.VolumeSource{Projected: &corev1.ProjectedVolumeSource{Sources: sources}},
		}}
	})
}

// The drift rule decides from the old object and the new template only, never from what
// the mutator itself patches (paused, coalmine's metadata), so re-invocation agrees.
func TestRepresentationDriftIsIdempotent(t *testing.T) {
	upgraded := managed(depV1, revBeforeUpgrade)
	for _, tc := range []struct {
		name     string
		old, new *appsv1.Deployment
		drift    bool
	}{
		{"replica change", upgraded, with(upgraded, func(d *appsv1.Deployment) { d.Spec.Replicas = new(int32(5)) }), true},
		{"dropped metadata", upgraded, depV1, true},
		{"real change", upgraded, managed(depV2, revBeforeUpgrade), false},
		{"paused old object", with(upgraded, func(d *appsv1.Deployment) { d.Spec.Paused = true }), upgraded, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			oldView, newView := view(t, tc.old), view(t, tc.new)
			if got := isRepresentationDrift(oldView, newView, revBeforeUpgrade); got != tc.drift {
				t.Fatalf("drift = %v, want %v", got, tc.drift)
			}
			patched := with(tc.new, func(d *appsv1.Deployment) {
				d.Spec.Paused = !d.Spec.Paused
				d.Labels[v1beta1.LabelManaged] = "true"
				if d.Annotations == nil {
					d.Annotations = map[string]string{}
				}
				d.Annotations[v1beta1.AnnotationRevision] = "anything"
			})
			if got := isRepresentationDrift(oldView, view(t, patched), revBeforeUpgrade); got != tc.drift {
				t.Fatalf("after the mutator's own fields changed: drift = %v, want %v", got, tc.drift)
			}
		})
	}
}

func view(t *testing.T, d *appsv1.Deployment) *deploymentView {
	t.Helper()
	v, err := decodeDeploymentView(mustJSON(t, d))
	if err != nil {
		t.Fatal(err)
	}
	return v
}
