package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"
)

// PrometheusInterval is the scrape and rule evaluation interval of the sandbox's
// Prometheus servers: a series written by a target is queryable on the zone a few seconds
// later, and on main after the remote-write lag (see prometheus_tiers.go).
const PrometheusInterval = time.Second

// prometheusConfig is the part of Prometheus' configuration the sandbox writes.
type prometheusConfig struct {
	Global        promGlobal     `json:"global"`
	RemoteWrite   []remoteWrite  `json:"remote_write,omitempty"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type promGlobal struct {
	ScrapeInterval     string `json:"scrape_interval"`
	ScrapeTimeout      string `json:"scrape_timeout"`
	EvaluationInterval string `json:"evaluation_interval"`
	// ExternalLabels are added to every series a zone Prometheus remote-writes, as a real
	// zone's carry zone and cluster.
	ExternalLabels map[string]string `json:"external_labels,omitempty"`
}

// remoteWrite is one remote_write entry. Its queue is left at Prometheus' defaults
// (batches sent every 5 s or 2000 samples): the lag they cause is what a real zone has
// and what the analysis must live with.
type remoteWrite struct {
	Name string `json:"name"`
	URL  string `json:"url"`
}

type scrapeConfig struct {
	JobName string `json:"job_name"`
	// FallbackScrapeProtocol lets a target answer without a Content-Type (a simulator
	// writing text by hand); Prometheus 3 otherwise refuses the scrape.
	FallbackScrapeProtocol string         `json:"fallback_scrape_protocol"`
	StaticConfigs          []staticConfig `json:"static_configs"`
}

type staticConfig struct {
	Targets []string `json:"targets"`
}

// newPrometheusConfig is the configuration of a Prometheus scraping targets (job ->
// host:port) every PrometheusInterval, and nothing else.
func newPrometheusConfig(targets map[string][]string) prometheusConfig {
	interval := PrometheusInterval.String()
	cfg := prometheusConfig{
		Global:        promGlobal{ScrapeInterval: interval, ScrapeTimeout: interval, EvaluationInterval: interval},
		ScrapeConfigs: []scrapeConfig{},
	}
	jobs := make([]string, 0, len(targets))
	for job := range targets {
		jobs = append(jobs, job)
	}
	sort.Strings(jobs)
	for _, job := range jobs {
		if len(targets[job]) == 0 {
			continue
		}
		cfg.ScrapeConfigs = append(cfg.ScrapeConfigs, scrapeConfig{
			JobName:                job,
			FallbackScrapeProtocol: "PrometheusText0.0.4",
			StaticConfigs:          []staticConfig{{Targets: targets[job]}},
		})
	}
	return cfg
}

// renderPrometheusConfig renders newPrometheusConfig(targets); the main Prometheus runs
// it with no targets (it only receives remote writes).
func renderPrometheusConfig(targets map[string][]string) ([]byte, error) {
	return yaml.Marshal(newPrometheusConfig(targets))
}

// promServer is one Prometheus process of the sandbox (main or a zone). It keeps its
// port and data directory across stop and start, so an outage scenario gets the same URL
// and the series it had back. Its owner serialises the calls.
type promServer struct {
	name   string // prometheus-main, prometheus-<zone>: its log and state directory
	logDir string
	bin    string
	log    io.Writer
	flags  []string // flags of its role, besides the common ones
	port   int
	proc   *process
}

func newPromServer(s *Sandbox, name string, flags ...string) *promServer {
	return &promServer{name: name, logDir: s.Dir, bin: s.Binaries.Prometheus, log: s.log, flags: flags}
}

func (p *promServer) dir() string { return filepath.Join(p.logDir, p.name) }

// url is the server's base URL; it is known before the first start.
func (p *promServer) url() (string, error) {
	if p.port == 0 {
		port, err := freePort()
		if err != nil {
			return "", err
		}
		p.port = port
	}
	return "http://127.0.0.1:" + strconv.Itoa(p.port), nil
}

func (p *promServer) running() bool {
	if p.proc == nil {
		return false
	}
	done, _ := p.proc.exited()
	return !done
}

// writeConfig writes the configuration atomically, so a reload never reads half a file.
func (p *promServer) writeConfig(data []byte) (string, error) {
	if err := os.MkdirAll(filepath.Join(p.dir(), "data"), 0o755); err != nil {
		return "", fmt.Errorf("create %s directory: %w", p.name, err)
	}
	path := filepath.Join(p.dir(), "prometheus.yml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return "", fmt.Errorf("write %s config: %w", p.name, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write %s config: %w", p.name, err)
	}
	return path, nil
}

// start starts the server with config and returns once it is ready; starting a running
// server does nothing.
func (p *promServer) start(ctx context.Context, config []byte) error {
	if p.running() {
		return nil
	}
	base, err := p.url()
	if err != nil {
		return err
	}
	cfgPath, err := p.writeConfig(config)
	if err != nil {
		return err
	}
	start := time.Now()
	args := append([]string{
		"--config.file=" + cfgPath,
		"--storage.tsdb.path=" + filepath.Join(p.dir(), "data"),
		"--web.listen-address=127.0.0.1:" + strconv.Itoa(p.port),
		"--web.enable-lifecycle",
		"--log.level=warn",
	}, p.flags...)
	proc, err := startProcess(p.name, p.logDir, p.bin, args...)
	if err != nil {
		return err
	}
	p.proc = proc
	err = Poll(ctx, 60*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := proc.exited(); done {
			return false, err
		}
		return httpOK(ctx, http.MethodGet, base+"/-/ready")
	})
	if err != nil {
		return fmt.Errorf("wait for %s (log: %s): %w", p.name, proc.logPath, err)
	}
	fmt.Fprintf(p.log, "sandbox: %s up in %s at %s\n", p.name, time.Since(start).Round(10*time.Millisecond), base)
	return nil
}

// stop stops the server, keeping its data and port.
func (p *promServer) stop() error {
	if p.proc == nil {
		return nil
	}
	start := time.Now()
	err := p.proc.stop(15 * time.Second)
	p.proc = nil
	fmt.Fprintf(p.log, "sandbox: %s stopped in %s\n", p.name, time.Since(start).Round(10*time.Millisecond))
	return err
}

// reload writes config and, when the server runs, has it reload.
func (p *promServer) reload(ctx context.Context, config []byte) (running bool, err error) {
	if _, err := p.writeConfig(config); err != nil {
		return false, err
	}
	if !p.running() {
		return false, nil
	}
	base, _ := p.url()
	if ok, err := httpOK(ctx, http.MethodPost, base+"/-/reload"); err != nil || !ok {
		return true, fmt.Errorf("reload %s (log: %s): %w", p.name, p.proc.logPath, err)
	}
	return true, nil
}

// waitTargetHealth waits until the server reports the target up.
func (p *promServer) waitTargetHealth(ctx context.Context, job, hostport string) error {
	base, _ := p.url()
	u := base + "/api/v1/targets?state=active&scrapePool=" + url.QueryEscape(job)
	return Poll(ctx, 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer resp.Body.Close()
		var body struct {
			Data struct {
				ActiveTargets []struct {
					Labels    map[string]string `json:"labels"`
					Health    string            `json:"health"`
					LastError string            `json:"lastError"`
				} `json:"activeTargets"`
			} `json:"data"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			return false, fmt.Errorf("read %s targets: %w", p.name, err)
		}
		for _, t := range body.Data.ActiveTargets {
			if t.Labels["job"] != job || t.Labels["instance"] != hostport {
				continue
			}
			if t.Health == "up" {
				return true, nil
			}
			return false, fmt.Errorf("target %s of job %s is %q on %s: %s", hostport, job, t.Health, p.name, t.LastError)
		}
		return false, fmt.Errorf("target %s of job %s not discovered by %s yet", hostport, job, p.name)
	})
}

func httpOK(ctx context.Context, method, u string) (bool, error) {
	req, err := http.NewRequestWithContext(ctx, method, u, nil)
	if err != nil {
		return false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("%s %s: %s", method, u, resp.Status)
	}
	return true, nil
}

var errNoPrometheus = errors.New("prometheus is not part of this sandbox")
