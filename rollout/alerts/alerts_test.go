package alerts

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/coalmine-dev/coalmine/api/v1beta1"
)

// received is one request a receiver got.
type received struct {
	Path, Auth, ContentType string
	Body                    map[string]any
}

// receiver is a local HTTP endpoint that records what it is posted.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	got  []received
	code int
}

func newReceiver(t *testing.T) *receiver {
	t.Helper()
	r := &receiver{code: http.StatusOK}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		data, _ := io.ReadAll(req.Body)
		var body map[string]any
		if err := json.Unmarshal(data, &body); err != nil {
			t.Errorf("%s: body is not a JSON object: %v: %s", req.URL.Path, err, data)
		}
		if req.Method != http.MethodPost {
			t.Errorf("%s: method %s, want POST", req.URL.Path, req.Method)
		}
		r.mu.Lock()
		r.got = append(r.got, received{Path: req.URL.Path, Auth: req.Header.Get("Authorization"), ContentType: req.Header.Get("Content-Type"), Body: body})
		code := r.code
		r.mu.Unlock()
		w.WriteHeader(code)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.got...)
}

// only returns the one request the receiver got.
func (r *receiver) only(t *testing.T) received {
	t.Helper()
	got := r.requests()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1: %+v", len(got), got)
	}
	if got[0].ContentType != "application/json" {
		t.Errorf("Content-Type %q, want application/json", got[0].ContentType)
	}
	return got[0]
}

func sampleAlert(sev v1beta1.AlertSeverity) Alert {
	return Alert{
		Canary: "alice", Namespace: "apps-a-mesh-a", Severity: sev,
		Message: "Failed checks threshold reached 5",
		Fields: []Field{
			{Name: "Target", Value: "Deployment/alice.apps-a-mesh-a"},
			{Name: "Failed checks threshold", Value: "5"},
		},
		Phase: v1beta1.PhaseFailed, Revision: "0123456789",
	}
}

// post sends a to a provider of type typ at the receiver, synchronously.
func post(t *testing.T, r *receiver, p Provider, a Alert) {
	t.Helper()
	if p.Address == "" {
		p.Address = r.URL + "/hook/T000/B000/secret"
	}
	if err := (&Notifier{}).Post(context.Background(), p, a); err != nil {
		t.Fatalf("post: %v", err)
	}
}

// jsonOf round-trips v to the generic JSON shape the receiver decodes.
func jsonOf(t *testing.T, v any) any {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out any
	if err := json.Unmarshal(data, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func assertBody(t *testing.T, got map[string]any, want string) {
	t.Helper()
	var w any
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatalf("bad want: %v", err)
	}
	if !reflect.DeepEqual(jsonOf(t, got), w) {
		g, _ := json.MarshalIndent(got, "", "  ")
		t.Errorf("payload:\n%s\nwant:\n%s", g, want)
	}
}

func TestAlertPayloadSlack(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "slack", Channel: "on-call", Username: "canary-bot", Token: "xoxb-1"}, sampleAlert(v1beta1.SeverityError))
	got := r.only(t)
	if got.Path != "/hook/T000/B000/secret" || got.Auth != "Bearer xoxb-1" {
		t.Errorf("path %q auth %q", got.Path, got.Auth)
	}
	assertBody(t, got.Body, `{
	  "channel": "on-call", "username": "canary-bot", "icon_url": "", "icon_emoji": ":rocket:",
	  "attachments": [{
	    "color": "danger", "author_name": "alice.apps-a-mesh-a",
	    "text": "Failed checks threshold reached 5", "mrkdwn_in": ["text"],
	    "fields": [
	      {"title": "Target", "value": "Deployment/alice.apps-a-mesh-a", "short": false},
	      {"title": "Failed checks threshold", "value": "5", "short": false}
	    ]
	  }]
	}`)

	// Not an error: "good"; no channel or username: the defaults.
	r2 := newReceiver(t)
	post(t, r2, Provider{Type: "slack"}, sampleAlert(v1beta1.SeverityWarn))
	b := r2.only(t).Body
	att := b["attachments"].([]any)[0].(map[string]any)
	if att["color"] != "good" || b["channel"] != DefaultChannel || b["username"] != DefaultUsername {
		t.Errorf("warn alert with defaults: %v", b)
	}
	if a := r2.only(t).Auth; a != "" {
		t.Errorf("Authorization %q without a token", a)
	}
}

func TestAlertPayloadMSTeams(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "msteams", Token: "not-sent"}, sampleAlert(v1beta1.SeverityError))
	got := r.only(t)
	if got.Auth != "" {
		t.Errorf("MS Teams got Authorization %q", got.Auth)
	}
	assertBody(t, got.Body, `{
	  "@type": "MessageCard", "@context": "http://schema.org/extensions",
	  "themeColor": "FF0000", "summary": "alice.apps-a-mesh-a",
	  "sections": [{
	    "activityTitle": "Failed checks threshold reached 5",
	    "activitySubtitle": "alice.apps-a-mesh-a",
	    "facts": [
	      {"name": "Target", "value": "Deployment/alice.apps-a-mesh-a"},
	      {"name": "Failed checks threshold", "value": "5"}
	    ]
	  }]
	}`)
	r2 := newReceiver(t)
	post(t, r2, Provider{Type: "msteams"}, sampleAlert(v1beta1.SeverityInfo))
	if c := r2.only(t).Body["themeColor"]; c != "0076D7" {
		t.Errorf("info themeColor %v, want 0076D7", c)
	}
}

func TestAlertPayloadDiscord(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "discord", Address: r.URL + "/api/webhooks/1/abc", Channel: "deploys", Username: "cm"}, sampleAlert(v1beta1.SeverityError))
	got := r.only(t)
	// Discord reads Slack's payload at <webhook>/slack.
	if got.Path != "/api/webhooks/1/abc/slack" {
		t.Errorf("path %q, want the webhook's /slack", got.Path)
	}
	assertBody(t, got.Body, `{
	  "channel": "deploys", "username": "cm", "icon_url": "", "icon_emoji": ":rocket:",
	  "attachments": [{
	    "color": "danger", "author_name": "alice.apps-a-mesh-a",
	    "text": "Failed checks threshold reached 5", "mrkdwn_in": ["text"],
	    "fields": [
	      {"title": "Target", "value": "Deployment/alice.apps-a-mesh-a", "short": false},
	      {"title": "Failed checks threshold", "value": "5", "short": false}
	    ]
	  }]
	}`)
	// An address already ending in /slack is kept.
	r2 := newReceiver(t)
	post(t, r2, Provider{Type: "discord", Address: r2.URL + "/api/webhooks/1/abc/slack"}, sampleAlert(v1beta1.SeverityInfo))
	if p := r2.only(t).Path; p != "/api/webhooks/1/abc/slack" {
		t.Errorf("path %q", p)
	}
}

func TestAlertPayloadRocket(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "rocket", Channel: "releases", Username: "cm"}, sampleAlert(v1beta1.SeverityError))
	got := r.only(t)
	assertBody(t, got.Body, `{
	  "channel": "releases", "username": "cm", "icon_url": "", "icon_emoji": ":rocket:",
	  "attachments": [{
	    "color": "#FF0000", "author_name": "alice.apps-a-mesh-a",
	    "text": "Failed checks threshold reached 5", "mrkdwn_in": ["text"],
	    "fields": [
	      {"title": "Target", "value": "Deployment/alice.apps-a-mesh-a", "short": false},
	      {"title": "Failed checks threshold", "value": "5", "short": false}
	    ]
	  }]
	}`)
	r2 := newReceiver(t)
	post(t, r2, Provider{Type: "rocket"}, sampleAlert(v1beta1.SeverityInfo))
	if c := r2.only(t).Body["attachments"].([]any)[0].(map[string]any)["color"]; c != "#0076D7" {
		t.Errorf("info color %v, want #0076D7", c)
	}
}

func TestAlertPayloadGChat(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "gchat"}, sampleAlert(v1beta1.SeverityError))
	assertBody(t, r.only(t).Body, `{
	  "cards": [{
	    "header": {"title": "coalmine", "subtitle": "alice.apps-a-mesh-a"},
	    "sections": [
	      {"widgets": [{"textParagraph": {"text": "<font color=#848484><strong>Failed checks threshold reached 5</strong></font>"}}]},
	      {"widgets": [{"textParagraph": {"text": "Target<br><font color=#848484><strong>Deployment/alice.apps-a-mesh-a</strong></font>"}}]},
	      {"widgets": [{"textParagraph": {"text": "Failed checks threshold<br><font color=#848484><strong>5</strong></font>"}}]}
	    ]
	  }]
	}`)
}

func TestAlertPayloadGeneric(t *testing.T) {
	r := newReceiver(t)
	post(t, r, Provider{Type: "generic", Token: "s3cret"}, sampleAlert(v1beta1.SeverityError))
	got := r.only(t)
	if got.Auth != "Bearer s3cret" {
		t.Errorf("Authorization %q, want the token", got.Auth)
	}
	assertBody(t, got.Body, `{
	  "name": "alice", "namespace": "apps-a-mesh-a", "severity": "error",
	  "message": "Failed checks threshold reached 5", "phase": "Failed", "revision": "0123456789",
	  "fields": [
	    {"name": "Target", "value": "Deployment/alice.apps-a-mesh-a"},
	    {"name": "Failed checks threshold", "value": "5"}
	  ]
	}`)

	// Any 2xx is success; anything else an error that names neither path nor query.
	r.mu.Lock()
	r.code = http.StatusNoContent
	r.mu.Unlock()
	if err := (&Notifier{}).Post(context.Background(), Provider{Type: "generic", Address: r.URL + "/x"}, sampleAlert(v1beta1.SeverityInfo)); err != nil {
		t.Errorf("204: %v", err)
	}
	r.mu.Lock()
	r.code = http.StatusInternalServerError
	r.mu.Unlock()
	err := (&Notifier{}).Post(context.Background(), Provider{Type: "generic", Address: r.URL + "/services/secret-path"}, sampleAlert(v1beta1.SeverityInfo))
	if err == nil || !strings.Contains(err.Error(), "500") || strings.Contains(err.Error(), "secret-path") {
		t.Errorf("500: err = %v, want an error naming the status, not the address's path", err)
	}
	for _, bad := range []Provider{{Type: "generic"}, {Type: "pagerduty", Address: r.URL}, {Type: "slack", Address: "not a url"}, {Type: "slack", Address: r.URL, Proxy: "::"}} {
		if err := (&Notifier{}).Post(context.Background(), bad, sampleAlert(v1beta1.SeverityInfo)); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestAlertPostBoundedAndProxied(t *testing.T) {
	// A receiver that never answers: the post gives up at the timeout.
	block := make(chan struct{})
	slow := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { <-block }))
	t.Cleanup(func() { close(block); slow.Close() })
	began := time.Now()
	if err := (&Notifier{Timeout: 200 * time.Millisecond}).Post(context.Background(), Provider{Type: "slack", Address: slow.URL}, sampleAlert(v1beta1.SeverityInfo)); err == nil {
		t.Error("a receiver that never answers: no error")
	}
	if d := time.Since(began); d > 2*time.Second {
		t.Errorf("post took %s, want about the 200ms timeout", d)
	}

	// The proxy receives the request for the provider's address.
	var mu sync.Mutex
	var proxiedURL string
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		proxiedURL = r.URL.String()
		mu.Unlock()
	}))
	t.Cleanup(proxy.Close)
	if err := (&Notifier{}).Post(context.Background(), Provider{Type: "msteams", Address: "http://teams.example.invalid/webhook", Proxy: proxy.URL}, sampleAlert(v1beta1.SeverityInfo)); err != nil {
		t.Fatalf("through proxy: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if proxiedURL != "http://teams.example.invalid/webhook" {
		t.Errorf("proxy saw %q, want the provider's address", proxiedURL)
	}
}

func TestAlertSeverityFilter(t *testing.T) {
	for _, tt := range []struct {
		entry v1beta1.AlertSeverity
		want  []v1beta1.AlertSeverity
	}{
		{"", []v1beta1.AlertSeverity{"info", "warn", "error"}},
		{"info", []v1beta1.AlertSeverity{"info", "warn", "error"}},
		{"warn", []v1beta1.AlertSeverity{"warn", "error"}},
		{"error", []v1beta1.AlertSeverity{"error"}},
	} {
		var got []v1beta1.AlertSeverity
		for _, sev := range []v1beta1.AlertSeverity{"info", "warn", "error"} {
			if Admits(tt.entry, sev) {
				got = append(got, sev)
			}
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("entry %q admits %v, want %v", tt.entry, got, tt.want)
		}
	}
}

func testScheme(t *testing.T) *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAlertProviderSecretAddress(t *testing.T) {
	fromSecret, fromSpec := newReceiver(t), newReceiver(t)
	objs := []runtime.Object{
		// The Secret's address wins over spec.address; its token is sent as a bearer token.
		&v1beta1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Name: "slack", Namespace: "apps"},
			Spec: v1beta1.AlertProviderSpec{Type: "slack", Channel: "on-call", Address: fromSpec.URL + "/ignored",
				SecretRef: &corev1.LocalObjectReference{Name: "slack-url"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "slack-url", Namespace: "apps"},
			Data: map[string][]byte{"address": []byte(fromSecret.URL + "/services/T/B/X\n"), "token": []byte("xoxb-9")}},
		// A provider in another namespace (providerRef.namespace), address in the spec.
		&v1beta1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Name: "teams", Namespace: "platform"},
			Spec: v1beta1.AlertProviderSpec{Type: "msteams", Address: fromSpec.URL + "/teams"}},
		// A Secret without the address key, and a missing Secret: not sent.
		&v1beta1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Name: "no-key", Namespace: "apps"},
			Spec: v1beta1.AlertProviderSpec{Type: "slack", SecretRef: &corev1.LocalObjectReference{Name: "wrong-key"}}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "wrong-key", Namespace: "apps"}, Data: map[string][]byte{"url": []byte(fromSpec.URL)}},
		&v1beta1.AlertProvider{ObjectMeta: metav1.ObjectMeta{Name: "no-secret", Namespace: "apps"},
			Spec: v1beta1.AlertProviderSpec{Type: "slack", SecretRef: &corev1.LocalObjectReference{Name: "gone"}}},
	}
	c := fake.NewClientBuilder().WithScheme(testScheme(t)).WithRuntimeObjects(objs...).Build()
	n := &Notifier{Client: c, ClusterName: "zone-1"}

	p, err := n.Resolve(context.Background(), "apps", "slack")
	if err != nil || p.Address != fromSecret.URL+"/services/T/B/X" || p.Token != "xoxb-9" || p.Channel != "on-call" {
		t.Errorf("Resolve = %+v, %v", p, err)
	}
	if _, err := n.Resolve(context.Background(), "apps", "no-key"); err == nil || !strings.Contains(err.Error(), `no key "address"`) {
		t.Errorf("Secret without address: %v", err)
	}
	if _, err := n.Resolve(context.Background(), "apps", "no-secret"); err == nil || !strings.Contains(err.Error(), "gone") {
		t.Errorf("missing Secret: %v", err)
	}

	n.Send(context.Background(), "apps", []v1beta1.CanaryAlert{
		{Name: "on-call", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "slack"}},
		{Name: "platform", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "teams", Namespace: "platform"}},
		{Name: "broken", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "no-key"}},
		{Name: "missing", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "absent"}},
	}, sampleAlert(v1beta1.SeverityError))
	n.Wait()
	got := fromSecret.only(t)
	if got.Path != "/services/T/B/X" || got.Auth != "Bearer xoxb-9" {
		t.Errorf("secret address: path %q auth %q", got.Path, got.Auth)
	}
	fields := got.Body["attachments"].([]any)[0].(map[string]any)["fields"].([]any)
	if first := fields[0].(map[string]any); first["title"] != "Cluster" || first["value"] != "zone-1" {
		t.Errorf("first field %v, want Cluster zone-1", first)
	}
	if reqs := fromSpec.requests(); len(reqs) != 1 || reqs[0].Path != "/teams" {
		t.Errorf("spec address receiver got %+v, want only the teams post", reqs)
	}
}

func TestAlertGlobalProvider(t *testing.T) {
	r := newReceiver(t)
	n := &Notifier{Global: &Provider{Type: "slack", Address: r.URL + "/global", Channel: "ops"}}
	// A Canary without alerts goes to the global provider, whatever the severity.
	n.Send(context.Background(), "apps", nil, sampleAlert(v1beta1.SeverityInfo))
	n.Wait()
	if got := r.only(t); got.Path != "/global" || got.Body["channel"] != "ops" {
		t.Errorf("global post %+v", got)
	}
	// A Canary with alerts does not.
	n.Send(context.Background(), "apps", []v1beta1.CanaryAlert{{Name: "x", ProviderRef: v1beta1.CrossNamespaceObjectReference{Name: "absent"}}}, sampleAlert(v1beta1.SeverityInfo))
	n.Wait()
	if len(r.requests()) != 1 {
		t.Error("the global provider got an alert of a Canary with its own alerts")
	}
}
