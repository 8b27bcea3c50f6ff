// Package workload derives the Kubernetes objects of a canary rollout from a Canary and its
// target Deployment: the canary Deployment (selector labels suffixed so its pods are told
// apart from the target's), the apex/primary/canary Services, and the readiness checks that
// gate each step. Everything here is a pure function of its inputs; the reconciler does the
// reads and writes.
package workload
