// Package sandbox runs a real Kubernetes control plane on one machine for coalmine's
// demo, e2e tests and benchmarks, built from the Go module proxy alone.
//
// Build compiles (or reuses from the user cache) kube-apiserver, kube-controller-manager,
// kube-scheduler, kubectl, etcd, kwok and Prometheus, each from a small tools module under
// sandbox/tools so the product's go.mod stays clean. Start runs them: etcd and the
// apiserver through controller-runtime's envtest (certificates, free ports, an admin user,
// RBAC enforced), then the controller-manager, the scheduler and kwok with one fake node
// so Deployments get Ready pods, Kuma's CRDs (v1.8.1, plus a MeshHTTPRoute CRD written
// from Kuma 2.x's schema) and the seed's two Prometheus tiers: a zone Prometheus scraping
// targets added at run time and remote-writing them to the main one coalmine queries.
//
// Every process listens on a free loopback port, so two sandboxes can run at once, and
// every process is a child in its own process group that dies with its parent.
package sandbox
