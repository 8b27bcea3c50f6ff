// Module envoy-empty stands in for github.com/envoyproxy/go-control-plane/envoy.
//
// Kuma v1.8.1 needs the old, single-module go-control-plane (replaced below by
// Kuma's fork), while newer dependencies ask for the split-out ".../envoy" module.
// Both would provide the same import paths; this empty module makes the split-out
// one provide none, so every envoy package comes from Kuma's fork.
module github.com/envoyproxy/go-control-plane/envoy

go 1.22
