package sandbox

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"sync"

	"sigs.k8s.io/yaml"
)

// The seed's Prometheus topology, in two tiers from the same build: a zone Prometheus in
// the mesh scrapes the Envoy stats and remote-writes them, with the zone's external
// labels, to a main Prometheus started with the remote-write receiver. Coalmine queries
// main only (PrometheusURL), so the remote-write lag, the external labels and a broken
// link are in everything the analysis sees.

// The external labels of the sandbox's own zone Prometheus.
const (
	DefaultZone    = "zone-1"
	DefaultCluster = "coalmine-sandbox"
)

// ZonePrometheus is one zone's local Prometheus: it scrapes the zone's targets and
// remote-writes every series, labelled zone and cluster, to main through a link a test
// can cut (CutLink) while both keep running.
type ZonePrometheus struct {
	Zone    string
	Cluster string

	mu      sync.Mutex
	srv     *promServer
	link    *remoteWriteLink
	targets map[string][]string
}

func newZonePrometheus(s *Sandbox, zone, cluster, mainURL string) (*ZonePrometheus, error) {
	link, err := newRemoteWriteLink(mainURL)
	if err != nil {
		return nil, err
	}
	// New targets reach the scrape loop after this throttle (default 5s): tests add
	// targets at run time and wait for them.
	srv := newPromServer(s, "prometheus-"+zone, "--scrape.discovery-reload-interval=500ms")
	return &ZonePrometheus{Zone: zone, Cluster: cluster, srv: srv, link: link, targets: map[string][]string{}}, nil
}

// URL is the zone Prometheus' base URL (coalmine never queries it; tests compare).
func (z *ZonePrometheus) URL() string {
	z.mu.Lock()
	defer z.mu.Unlock()
	u, _ := z.srv.url()
	return u
}

// renderZoneConfig is a zone's configuration: its scrape targets, external labels and
// one remote_write to the link.
func renderZoneConfig(zone, cluster, writeURL string, targets map[string][]string) ([]byte, error) {
	cfg := newPrometheusConfig(targets)
	cfg.Global.ExternalLabels = map[string]string{"zone": zone, "cluster": cluster}
	cfg.RemoteWrite = []remoteWrite{{Name: "main", URL: writeURL}}
	return yaml.Marshal(cfg)
}

// config renders the current configuration. Callers hold mu.
func (z *ZonePrometheus) config() ([]byte, error) {
	data, err := renderZoneConfig(z.Zone, z.Cluster, z.link.writeURL(), z.targets)
	if err != nil {
		return nil, fmt.Errorf("render %s config: %w", z.srv.name, err)
	}
	return data, nil
}

// Start starts the zone Prometheus (on the port and with the data of a previous run) and
// returns once it is ready; starting a running one does nothing.
func (z *ZonePrometheus) Start(ctx context.Context) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	cfg, err := z.config()
	if err != nil {
		return err
	}
	return z.srv.start(ctx, cfg)
}

// Stop stops the zone Prometheus, keeping its data and port for Start. Main keeps what it
// received; nothing new arrives.
func (z *ZonePrometheus) Stop() error {
	z.mu.Lock()
	defer z.mu.Unlock()
	return z.srv.stop()
}

// CutLink breaks the remote-write link to main while both servers run.
func (z *ZonePrometheus) CutLink() { z.link.cut.Store(true) }

// RestoreLink mends the link; the zone then sends what it queued meanwhile.
func (z *ZonePrometheus) RestoreLink() { z.link.cut.Store(false) }

// LinkRequests are the remote-write requests the link forwarded and dropped so far.
func (z *ZonePrometheus) LinkRequests() (forwarded, dropped int64) {
	return z.link.forwarded.Load(), z.link.dropped.Load()
}

// AddScrapeTarget makes the zone scrape http://<hostport>/metrics every second as job,
// and waits until the target is up. A target's instance label is hostport. While the zone
// is stopped the target is only recorded; Start picks it up.
func (z *ZonePrometheus) AddScrapeTarget(ctx context.Context, job, hostport string) error {
	if job == "" || hostport == "" {
		return errors.New("add scrape target: job and host:port are required")
	}
	z.mu.Lock()
	if !slices.Contains(z.targets[job], hostport) {
		z.targets[job] = append(z.targets[job], hostport)
		sort.Strings(z.targets[job])
	}
	running, err := z.reload(ctx)
	z.mu.Unlock()
	if err != nil || !running {
		return err
	}
	return z.srv.waitTargetHealth(ctx, job, hostport)
}

// RemoveScrapeTarget stops scraping hostport in job.
func (z *ZonePrometheus) RemoveScrapeTarget(ctx context.Context, job, hostport string) error {
	z.mu.Lock()
	defer z.mu.Unlock()
	z.targets[job] = slices.DeleteFunc(z.targets[job], func(t string) bool { return t == hostport })
	_, err := z.reload(ctx)
	return err
}

// reload rewrites the configuration and has a running zone reload it. Callers hold mu.
func (z *ZonePrometheus) reload(ctx context.Context) (bool, error) {
	cfg, err := z.config()
	if err != nil {
		return false, err
	}
	return z.srv.reload(ctx, cfg)
}

// close stops the zone and its link for good.
func (z *ZonePrometheus) close() error {
	return errors.Join(z.Stop(), z.link.close())
}

// ensureTiers creates (without starting) main and the sandbox's own zone. Callers hold
// promMu.
func (s *Sandbox) ensureTiers() error {
	if s.Binaries == nil || s.Binaries.Prometheus == "" {
		return errNoPrometheus
	}
	if s.promMain != nil {
		return nil
	}
	main := newPromServer(s, "prometheus-main", "--web.enable-remote-write-receiver")
	mainURL, err := main.url()
	if err != nil {
		return err
	}
	zone, err := newZonePrometheus(s, DefaultZone, DefaultCluster, mainURL)
	if err != nil {
		return err
	}
	s.promMain, s.zone, s.PrometheusURL = main, zone, mainURL
	s.zones = append(s.zones, zone)
	return nil
}

// StartMainPrometheus starts the main Prometheus (same port and data as before) and
// returns once it is ready.
func (s *Sandbox) StartMainPrometheus(ctx context.Context) error {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	if err := s.ensureTiers(); err != nil {
		return err
	}
	cfg, err := renderPrometheusConfig(nil)
	if err != nil {
		return fmt.Errorf("render prometheus-main config: %w", err)
	}
	return s.promMain.start(ctx, cfg)
}

// StopMainPrometheus stops the main Prometheus, keeping its data and port: coalmine's
// queries fail while the zones queue their writes.
func (s *Sandbox) StopMainPrometheus() error {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	if s.promMain == nil {
		return nil
	}
	return s.promMain.stop()
}

// StartPrometheus starts main, then the sandbox's zone Prometheus.
func (s *Sandbox) StartPrometheus(ctx context.Context) error {
	if err := s.StartMainPrometheus(ctx); err != nil {
		return err
	}
	return s.Zone().Start(ctx)
}

// StopPrometheus stops the sandbox's zone Prometheus and main, keeping their data and
// ports for StartPrometheus. Zones added with AddZonePrometheus keep running.
func (s *Sandbox) StopPrometheus() error {
	z := s.Zone()
	if z == nil {
		return nil
	}
	return errors.Join(z.Stop(), s.StopMainPrometheus())
}

// Zone is the sandbox's own zone Prometheus (zone DefaultZone); nil without Prometheus.
func (s *Sandbox) Zone() *ZonePrometheus {
	s.promMu.Lock()
	defer s.promMu.Unlock()
	return s.zone
}

// AddZonePrometheus starts another zone Prometheus writing to main, for scenarios with
// several zones. It runs until the sandbox stops (or its Stop).
func (s *Sandbox) AddZonePrometheus(ctx context.Context, zone, cluster string) (*ZonePrometheus, error) {
	s.promMu.Lock()
	if err := s.ensureTiers(); err != nil {
		s.promMu.Unlock()
		return nil, err
	}
	for _, z := range s.zones {
		if z.Zone == zone {
			s.promMu.Unlock()
			return nil, fmt.Errorf("add zone Prometheus: zone %s exists", zone)
		}
	}
	z, err := newZonePrometheus(s, zone, cluster, s.PrometheusURL)
	if err == nil {
		s.zones = append(s.zones, z)
	}
	s.promMu.Unlock()
	if err != nil {
		return nil, err
	}
	return z, z.Start(ctx)
}

// AddScrapeTarget makes the sandbox's zone Prometheus scrape hostport as job (see
// ZonePrometheus.AddScrapeTarget); the series reach main after the remote-write lag.
func (s *Sandbox) AddScrapeTarget(ctx context.Context, job, hostport string) error {
	z := s.Zone()
	if z == nil {
		return errNoPrometheus
	}
	return z.AddScrapeTarget(ctx, job, hostport)
}

// RemoveScrapeTarget stops the sandbox's zone scraping hostport in job.
func (s *Sandbox) RemoveScrapeTarget(ctx context.Context, job, hostport string) error {
	z := s.Zone()
	if z == nil {
		return errNoPrometheus
	}
	return z.RemoveScrapeTarget(ctx, job, hostport)
}

// stopPrometheusTiers stops every zone and its link, then main, for Stop.
func (s *Sandbox) stopPrometheusTiers() error {
	s.promMu.Lock()
	zones := slices.Clone(s.zones)
	s.promMu.Unlock()
	var errs []error
	for _, z := range zones {
		errs = append(errs, z.close())
	}
	return errors.Join(append(errs, s.StopMainPrometheus())...)
}
