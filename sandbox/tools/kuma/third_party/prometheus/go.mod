// Module prometheus stands in for github.com/prometheus/prometheus in kuma-cp's build.
//
// Kuma v1.8.1 replaces Prometheus with a copy vendored in its repository, which its
// module zip does not contain. kuma-cp needs one function from it
// (util/strutil.SanitizeLabelName, for Prometheus service discovery labels), so this
// module provides exactly that and nothing else.
module github.com/prometheus/prometheus

go 1.18
