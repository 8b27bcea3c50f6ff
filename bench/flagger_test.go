//go:build linux

package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/coalmine-dev/coalmine/sandbox"
)

// flaggerProcess is Flagger running out of cluster against the sandbox as its
// ServiceAccount. Its apiserver requests go through a counting proxy that adds the
// impersonation (Flagger's kubeconfig names only the proxy), and its Prometheus queries
// through a counting proxy of their own, so every count is Flagger's alone.
type flaggerProcess struct {
	proc    *sandbox.FlaggerProcess
	logPath string
	port    int
	api     *requestCounter
	prom    *queryCounter
	servers []*http.Server
}

// startFlagger starts bin with the flags the design names (-kubeconfig, -mesh-provider=kuma,
// -metrics-server, -port) plus -log-level=info, coalmine's level (Flagger's default is
// debug, whose logging would be counted as its CPU). It returns once Flagger has started its
// workers.
func (e *env) startFlagger(ctx context.Context, bin, logPath string) (_ *flaggerProcess, err error) {
	f := &flaggerProcess{logPath: logPath, api: newRequestCounter()}
	defer func() {
		if err != nil {
			f.stop()
		}
	}()

	user, groups := sandbox.FlaggerUser()
	cfg := e.sb.Impersonate(user, groups...)
	rt, err := rest.TransportFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("transport for Flagger: %w", err)
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return nil, fmt.Errorf("parse apiserver address: %w", err)
	}
	apiProxy := httputil.NewSingleHostReverseProxy(target)
	apiProxy.Transport = f.api.wrap(rt)
	// Watches stream: pass every chunk on at once.
	apiProxy.FlushInterval = -1
	apiAddr, err := f.serve(apiProxy)
	if err != nil {
		return nil, err
	}
	if f.prom, err = newQueryCounter(e.sb.PrometheusURL); err != nil {
		return nil, err
	}
	promAddr, err := f.serve(f.prom)
	if err != nil {
		return nil, err
	}

	kubeconfig := filepath.Join(filepath.Dir(logPath), "kubeconfig-flagger")
	kc := clientcmdapi.NewConfig()
	kc.Clusters["proxy"] = &clientcmdapi.Cluster{Server: "http://" + apiAddr}
	kc.AuthInfos["proxy"] = &clientcmdapi.AuthInfo{}
	kc.Contexts["proxy"] = &clientcmdapi.Context{Cluster: "proxy", AuthInfo: "proxy"}
	kc.CurrentContext = "proxy"
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		return nil, fmt.Errorf("write Flagger's kubeconfig: %w", err)
	}

	if f.proc, err = sandbox.StartFlagger(ctx, sandbox.FlaggerOptions{
		Binary: bin, Kubeconfig: kubeconfig, MetricsServer: "http://" + promAddr, LogDir: filepath.Dir(logPath),
	}); err != nil {
		return nil, err
	}
	f.port, f.logPath = f.proc.Port, f.proc.LogPath()
	return f, nil
}

// serve serves h on a free loopback port until stop.
func (f *flaggerProcess) serve(h http.Handler) (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("listen for a Flagger proxy: %w", err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	f.servers = append(f.servers, srv)
	go func() { _ = srv.Serve(l) }()
	return l.Addr().String(), nil
}

func (f *flaggerProcess) pid() string { return strconv.Itoa(f.proc.Pid()) }

// rss is Flagger's resident memory now.
func (f *flaggerProcess) rss() uint64 { return readRSSOf(f.pid()) }

// heapInuse is the Go heap in use Flagger reports on its /metrics (0 if unreadable).
func (f *flaggerProcess) heapInuse() uint64 {
	v, err := scrapeSample("http://127.0.0.1:"+strconv.Itoa(f.port)+"/metrics", "go_memstats_heap_inuse_bytes")
	if err != nil {
		return 0
	}
	return uint64(v)
}

// cpu is Flagger's user+system CPU time so far, from /proc/<pid>/stat.
func (f *flaggerProcess) cpu() time.Duration {
	d, _ := procCPU(f.pid())
	return d
}

// procCPU reads utime+stime (fields 14 and 15, in clock ticks) of /proc/<pid>/stat. The
// tick is USER_HZ, 100 on Linux for every architecture Go supports here.
func procCPU(pid string) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, fmt.Errorf("read CPU of %s: %w", pid, err)
	}
	// The command name (field 2) is in parentheses and may hold spaces: count after it.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("read CPU of " + pid + ": malformed stat")
	}
	fields := strings.Fields(string(data[i+1:]))
	// fields[0] is field 3 (state), so utime (14) and stime (15) are fields[11] and [12].
	if len(fields) < 13 {
		return 0, errors.New("read CPU of " + pid + ": short stat")
	}
	ut, err1 := strconv.ParseInt(fields[11], 10, 64)
	st, err2 := strconv.ParseInt(fields[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("read CPU of %s: %w", pid, err)
	}
	const userHZ = 100
	return time.Duration(ut+st) * time.Second / userHZ, nil
}

// stop ends Flagger and its proxies.
func (f *flaggerProcess) stop() {
	if f.proc != nil {
		_ = f.proc.Stop()
	}
	for _, s := range f.servers {
		_ = s.Close()
	}
}
