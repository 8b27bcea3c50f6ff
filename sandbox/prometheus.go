package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"time"

	"sigs.k8s.io/yaml"
)

// PrometheusInterval is the scrape and rule evaluation interval of the sandbox's
// Prometheus: a series written by a target is queryable a few seconds later.
const PrometheusInterval = time.Second

// prometheusConfig is the part of Prometheus' configuration the sandbox writes.
type prometheusConfig struct {
	Global        promGlobal     `json:"global"`
	ScrapeConfigs []scrapeConfig `json:"scrape_configs"`
}

type promGlobal struct {
	ScrapeInterval     string `json:"scrape_interval"`
	ScrapeTimeout      string `json:"scrape_timeout"`
	EvaluationInterval string `json:"evaluation_interval"`
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

func renderPrometheusConfig(targets map[string][]string) ([]byte, error) {
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
	return yaml.Marshal(cfg)
}

func (s *Sandbox) prometheusDir() string { return filepath.Join(s.Dir, "prometheus") }

// writePrometheusConfig writes the configuration for the current targets atomically,
// so a reload never reads half a file. Callers hold promMu.
func (s *Sandbox) writePrometheusConfig() (string, error) {
	data, err := renderPrometheusConfig(s.promTargets)
	if err != nil {
		return "", fmt.Errorf("render prometheus config: %w", err)
	}
	path := filepath.Join(s.prometheusDir(), "prometheus.yml")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return "", fmt.Errorf("write prometheus config: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return "", fmt.Errorf("write prometheus config: %w", err)
	}
	return path, nil
}

// StartPrometheus starts Prometheus, on the port and with the data of the previous run
// if there was one (the Prometheus-outage scenario stops and starts it again). It
// returns once Prometheus is ready; starting a running Prometheus does nothing.
func (s *Sandbox) StartPrometheus(ctx context.Context) error {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	if s.prom != nil {
		if done, _ := s.prom.exited(); !done {
			return nil
		}
	}
	if s.promPort == 0 {
		port, err := freePort()
		if err != nil {
			return err
		}
		s.promPort = port
	}
	if err := os.MkdirAll(filepath.Join(s.prometheusDir(), "data"), 0o755); err != nil {
		return fmt.Errorf("create prometheus directory: %w", err)
	}
	cfgPath, err := s.writePrometheusConfig()
	if err != nil {
		return err
	}
	start := time.Now()
	addr := "127.0.0.1:" + strconv.Itoa(s.promPort)
	p, err := startProcess("prometheus", s.Dir, s.Binaries.Prometheus,
		"--config.file="+cfgPath,
		"--storage.tsdb.path="+filepath.Join(s.prometheusDir(), "data"),
		"--web.listen-address="+addr,
		"--web.enable-remote-write-receiver",
		"--web.enable-lifecycle",
		// New targets reach the scrape loop after this throttle (default 5s): tests
		// add targets at run time and wait for them.
		"--scrape.discovery-reload-interval=500ms",
		"--log.level=warn",
	)
	if err != nil {
		return err
	}
	s.prom = p
	s.PrometheusURL = "http://" + addr
	err = Poll(ctx, 60*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, error) {
		if done, err := p.exited(); done {
			return false, err
		}
		return httpOK(ctx, http.MethodGet, s.PrometheusURL+"/-/ready")
	})
	if err != nil {
		return fmt.Errorf("wait for prometheus (log: %s): %w", p.logPath, err)
	}
	fmt.Fprintf(s.log, "sandbox: prometheus up in %s at %s\n", time.Since(start).Round(10*time.Millisecond), s.PrometheusURL)
	return nil
}

// StopPrometheus stops Prometheus, keeping its data and port for StartPrometheus.
func (s *Sandbox) StopPrometheus() error {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	if s.prom == nil {
		return nil
	}
	start := time.Now()
	err := s.prom.stop(15 * time.Second)
	s.prom = nil
	fmt.Fprintf(s.log, "sandbox: prometheus stopped in %s\n", time.Since(start).Round(10*time.Millisecond))
	return err
}

// AddScrapeTarget makes Prometheus scrape http://<hostport>/metrics every second as
// job, and waits until the target is up. A target's instance label is hostport. While
// Prometheus is stopped the target is only recorded; StartPrometheus picks it up.
func (s *Sandbox) AddScrapeTarget(ctx context.Context, job, hostport string) error {
	if job == "" || hostport == "" {
		return errors.New("add scrape target: job and host:port are required")
	}
	s.promMu.Lock()
	if !slices.Contains(s.promTargets[job], hostport) {
		s.promTargets[job] = append(s.promTargets[job], hostport)
		sort.Strings(s.promTargets[job])
	}
	running, err := s.reloadPrometheus(ctx)
	s.promMu.Unlock()
	if err != nil || !running {
		return err
	}
	return s.waitTargetHealth(ctx, job, hostport)
}

// RemoveScrapeTarget stops scraping hostport in job.
func (s *Sandbox) RemoveScrapeTarget(ctx context.Context, job, hostport string) error {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	s.promTargets[job] = slices.DeleteFunc(s.promTargets[job], func(t string) bool { return t == hostport })
	_, err := s.reloadPrometheus(ctx)
	return err
}

// reloadPrometheus rewrites the configuration and, when Prometheus runs, has it reload.
// Callers hold promMu.
func (s *Sandbox) reloadPrometheus(ctx context.Context) (running bool, err error) {
	if s.Binaries == nil || s.Binaries.Prometheus == "" || s.PrometheusURL == "" {
		return false, errors.New("prometheus is not part of this sandbox")
	}
	if _, err := s.writePrometheusConfig(); err != nil {
		return false, err
	}
	if s.prom == nil {
		return false, nil
	}
	ok, err := httpOK(ctx, http.MethodPost, s.PrometheusURL+"/-/reload")
	if err != nil || !ok {
		return true, fmt.Errorf("reload prometheus (log: %s): %v", s.prom.logPath, err)
	}
	return true, nil
}

// waitTargetHealth waits until Prometheus reports the target up.
func (s *Sandbox) waitTargetHealth(ctx context.Context, job, hostport string) error {
	u := s.PrometheusURL + "/api/v1/targets?state=active&scrapePool=" + url.QueryEscape(job)
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
			return false, fmt.Errorf("read prometheus targets: %w", err)
		}
		for _, t := range body.Data.ActiveTargets {
			if t.Labels["job"] != job || t.Labels["instance"] != hostport {
				continue
			}
			if t.Health == "up" {
				return true, nil
			}
			return false, fmt.Errorf("target %s of job %s is %q: %s", hostport, job, t.Health, t.LastError)
		}
		return false, fmt.Errorf("target %s of job %s not discovered yet", hostport, job)
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
