// Package router writes the Kuma policy that splits an app's traffic between its primary
// and canary Services.
//
// Two implementations share one interface: TrafficRoute (Kuma 1.x and 2.x, cluster-scoped,
// written where the mesh's policies live — the Global control plane in multi-zone) and
// MeshHTTPRoute (Kuma >= 2.x, namespaced, written next to the app). The Kuma types here are
// coalmine's own small mirrors of Kuma's schema: importing Kuma's Go module would drag an
// old Envoy and cloud SDK into the product (DESIGN §7). A test-only module,
// e2e/kumajudge, checks these objects with Kuma's own validator.
//
// +kubebuilder:object:generate=true
// +groupName=kuma.io
//
// +kubebuilder:rbac:groups=kuma.io,resources=trafficroutes;meshhttproutes,verbs=get;list;watch;create;update;patch;delete
package router
