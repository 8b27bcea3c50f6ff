// Module envoy-empty stands in for github.com/envoyproxy/go-control-plane/envoy.
//
// Kuma v1.8.1 needs the old, single-module go-control-plane (replaced in ../../go.mod by
// Kuma's fork). Newer dependencies ask for the split-out ".../envoy" module, which would
// provide the same import paths and make them ambiguous. Today's dependency graph pulls
// no such module, so this is a guard: should one appear, it provides no package and every
// envoy import still comes from Kuma's fork.
module github.com/envoyproxy/go-control-plane/envoy

go 1.22
