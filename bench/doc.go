// Package bench holds coalmine's end-to-end benchmarks on the sandbox: the progression loop
// with N concurrent canaries (CPU, memory, apiserver requests and Prometheus queries per
// canary, and how much slower N rollouts at once finish than one), and the overhead the
// Deployment webhook adds to a server-side apply through the apiserver.
//
// `make bench` runs them with -benchtime 1x. They report figures and the targets to compare
// them with; they never fail on a timing. COALMINE_BENCH_MAX caps the largest N (default
// 200; 1000 adds N=1000).
package bench
