package router

import (
	"errors"
	"fmt"
)

// ErrNotOurs is wrapped by Acquire's error when an object that coalmine did not write for
// this Canary holds the route's name. Retrying does not help; a person must act.
var ErrNotOurs = errors.New("route is not coalmine's")

// Owned says whether an object with these labels is the route coalmine writes for t:
// managed by coalmine, for t's Canary, in t's namespace. A missing label never matches,
// not even an empty wanted value.
func Owned(labels map[string]string, t Target) bool {
	for k, want := range t.labels() {
		if got, ok := labels[k]; !ok || got != want || want == "" {
			return false
		}
	}
	return true
}

// notOurs explains why the object named kind/name is not t's route and what to do.
func notOurs(kind, name string, labels map[string]string, t Target) error {
	return fmt.Errorf("%w: %s %s exists and %s; rename or delete it, or label it %s=%s, %s=%s, %s=%s to hand it to Canary %s/%s",
		ErrNotOurs, kind, name, whose(labels, t),
		LabelManagedBy, ManagedByValue, LabelCanaryName, t.CanaryName, LabelCanaryNamespace, t.Namespace,
		t.Namespace, t.CanaryName)
}

// whose says who an object that is not t's route belongs to, as far as its labels tell.
func whose(labels map[string]string, t Target) string {
	switch by, ok := labels[LabelManagedBy]; {
	case !ok:
		return "is not managed by coalmine"
	case by != ManagedByValue:
		return fmt.Sprintf("is managed by %q", by)
	}
	return fmt.Sprintf("belongs to Canary %s/%s", labels[LabelCanaryNamespace], labels[LabelCanaryName])
}
