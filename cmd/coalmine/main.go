package main

import (
	_ "github.com/coalmine-dev/coalmine/api/v1beta1"
	_ "github.com/prometheus/client_golang/api"
	_ "github.com/prometheus/prometheus/promql/parser"
	_ "sigs.k8s.io/controller-runtime"
)

func main() {}
