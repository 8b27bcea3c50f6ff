package app

import (
	"flag"
	"strings"
	"testing"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

func TestAlertingFlags(t *testing.T) {
	t.Setenv("SLACK_URL", "https://hooks.slack.com/services/from-env")
	parse := func(args ...string) *Options {
		t.Helper()
		o := &Options{}
		fs := flag.NewFlagSet("coalmine", flag.ContinueOnError)
		o.BindFlags(fs)
		if err := fs.Parse(append([]string{"--namespace=coalmine-system"}, args...)); err != nil {
			t.Fatal(err)
		}
		return o
	}
	// Flagger's environment variable is the default; Slack is the global provider.
	p := parse("--slack-channel=ops").GlobalAlertProvider()
	if p == nil || p.Type != v1beta1.AlertProviderSlack || p.Address != "https://hooks.slack.com/services/from-env" || p.Channel != "ops" || p.Username != "coalmine" {
		t.Errorf("slack provider %+v", p)
	}
	// MS Teams wins over Slack, as in Flagger.
	p = parse("--msteams-url=https://example.webhook.office.com/x", "--msteams-proxy-url=http://proxy:3128").GlobalAlertProvider()
	if p == nil || p.Type != v1beta1.AlertProviderMSTeams || p.Proxy != "http://proxy:3128" {
		t.Errorf("msteams provider %+v", p)
	}
	t.Setenv("SLACK_URL", "")
	if p := parse().GlobalAlertProvider(); p != nil {
		t.Errorf("no URL: provider %+v", p)
	}
	err := parse("--event-webhook=ftp://secret-host/token").Validate()
	if err == nil || !strings.Contains(err.Error(), "--event-webhook is not an http(s) URL") || strings.Contains(err.Error(), "secret-host") {
		t.Errorf("Validate = %v, want the flag named and the value not echoed", err)
	}
}
