package sandbox

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"sigs.k8s.io/yaml"
)

// The real servers load these configs in the e2e tests; here their shape is checked.
func TestZonePrometheusConfig(t *testing.T) {
	data, err := renderZoneConfig("zone-a", "east", "http://127.0.0.1:9/api/v1/write", map[string][]string{"sim": {"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	var cfg prometheusConfig
	if err := yaml.UnmarshalStrict(data, &cfg); err != nil {
		t.Fatalf("%v\n%s", err, data)
	}
	if got := cfg.Global.ExternalLabels; len(got) != 2 || got["zone"] != "zone-a" || got["cluster"] != "east" {
		t.Errorf("external labels %v, want zone=zone-a and cluster=east", got)
	}
	if len(cfg.RemoteWrite) != 1 || cfg.RemoteWrite[0].URL != "http://127.0.0.1:9/api/v1/write" {
		t.Errorf("remote_write %+v, want one, to the link", cfg.RemoteWrite)
	}
	if len(cfg.ScrapeConfigs) != 1 || cfg.ScrapeConfigs[0].JobName != "sim" {
		t.Errorf("scrape configs %+v, want job sim", cfg.ScrapeConfigs)
	}
}

func TestMainPrometheusConfigOnlyReceives(t *testing.T) {
	data, err := renderPrometheusConfig(nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(data); strings.Contains(s, "remote_write") || strings.Contains(s, "external_labels") || !strings.Contains(s, "scrape_configs: []") {
		t.Errorf("main config:\n%s\nwant no remote_write, no external labels, no scrape jobs", s)
	}
}

// A cut link drops requests without an answer (Prometheus retries them); main down is a
// 502 (also retried); restored, writes reach main again.
func TestRemoteWriteLinkCutAndRestore(t *testing.T) {
	var received atomic.Int64
	mainSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/v1/write" {
			received.Add(1)
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	link, err := newRemoteWriteLink(mainSrv.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = link.close() })
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	write := func() (int, error) {
		resp, err := client.Post(link.writeURL(), "application/x-protobuf", strings.NewReader("x"))
		if err != nil {
			return 0, err
		}
		resp.Body.Close()
		return resp.StatusCode, nil
	}

	if code, err := write(); err != nil || code != http.StatusNoContent || received.Load() != 1 {
		t.Fatalf("write through the link: %d, %v, main received %d; want 204 and 1", code, err, received.Load())
	}
	link.cut.Store(true)
	if code, err := write(); err == nil {
		t.Fatalf("write through a cut link answered %d, want the connection dropped", code)
	}
	if received.Load() != 1 {
		t.Errorf("main received %d writes, want none while cut", received.Load()-1)
	}
	link.cut.Store(false)
	if code, err := write(); err != nil || code != http.StatusNoContent || received.Load() != 2 {
		t.Fatalf("write through the restored link: %d, %v, main received %d; want 204 and 2", code, err, received.Load())
	}
	mainSrv.Close()
	if code, err := write(); err != nil || code != http.StatusBadGateway {
		t.Errorf("write with main down: %d, %v; want 502", code, err)
	}
	if fwd, dropped := link.forwarded.Load(), link.dropped.Load(); fwd != 3 || dropped != 1 {
		t.Errorf("forwarded %d, dropped %d; want 3 and 1", fwd, dropped)
	}
}
