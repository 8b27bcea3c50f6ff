// Module envoy-empty stands in for github.com/envoyproxy/go-control-plane/envoy.
//
// Kuma v1.8.1 needs the old, single-module go-control-plane (replaced in ../../go.mod by
// Kuma's fork). Newer dependencies ask for the split-out ".../envoy" module, which would
// provide the same import paths and make them ambiguous. This guard provides no package,
// so every envoy import still comes from Kuma's fork.
module github.com/envoyproxy/go-control-plane/envoy

go 1.22
