package certs

import (
	"crypto/x509"
	"net"
	"testing"
	"time"
)

var (
	t0       = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	day      = 24 * time.Hour
	year     = 365 * day
	testV    = validity{CA: 10 * year, Serving: year}
	svcNames = names{DNS: ServiceDNSNames("coalmine-webhook", "coalmine-system")}
)

func mustApply(t *testing.T, act action, b bundle, now time.Time, want names) map[string][]byte {
	t.Helper()
	data, err := apply(act, b, now, want, testV)
	if err != nil {
		t.Fatalf("apply %s: %v", act, err)
	}
	return data
}

func TestDecide(t *testing.T) {
	fresh := mustApply(t, actionNewCA, bundle{}, t0, svcNames)
	other := mustApply(t, actionNewCA, bundle{}, t0, svcNames)
	with := func(base map[string][]byte, kv ...string) map[string][]byte {
		out := map[string][]byte{}
		for k, v := range base {
			out[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			if kv[i+1] == "" {
				delete(out, kv[i])
				continue
			}
			out[kv[i]] = []byte(kv[i+1])
		}
		return out
	}
	withSAN := names{DNS: append(svcNames.DNS, "coalmine.example"), IPs: []net.IP{net.ParseIP("127.0.0.1")}}

	tests := []struct {
		name string
		data map[string][]byte
		now  time.Time
		want names
		act  action
	}{
		{"empty Secret makes a CA", nil, t0, svcNames, actionNewCA},
		{"garbage ca.crt makes a CA", with(fresh, KeyCA, "not pem"), t0, svcNames, actionNewCA},
		{"ca.key of another CA makes a CA", with(fresh, KeyCAKey, string(other[KeyCAKey])), t0, svcNames, actionNewCA},
		{"missing ca.key makes a CA", with(fresh, KeyCAKey, ""), t0, svcNames, actionNewCA},
		{"fresh pair is kept", fresh, t0.Add(day), svcNames, actionKeep},
		{"two thirds into the serving lifetime is kept", fresh, t0.Add(240 * day), svcNames, actionKeep},
		{"less than a third of the serving lifetime left renews it", fresh, t0.Add(250 * day), svcNames, actionIssueServing},
		{"expired serving certificate renews it", fresh, t0.Add(400 * day), svcNames, actionIssueServing},
		{"serving certificate of another CA renews it", with(fresh, KeyCert, string(other[KeyCert]), KeyKey, string(other[KeyKey])), t0, svcNames, actionIssueServing},
		{"serving key not matching renews it", with(fresh, KeyKey, string(other[KeyKey])), t0, svcNames, actionIssueServing},
		{"missing tls.crt renews it", with(fresh, KeyCert, ""), t0, svcNames, actionIssueServing},
		{"a wanted name missing renews it", fresh, t0, withSAN, actionIssueServing},
		{"extra names in the certificate are fine", mustApply(t, actionNewCA, bundle{}, t0, withSAN), t0, svcNames, actionKeep},
		{"less than a third of the CA lifetime left rotates the CA", fresh, t0.Add(7 * year), svcNames, actionRotateCA},
		{"expired CA starts over", fresh, t0.Add(11 * year), svcNames, actionNewCA},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			act, why := decide(parseBundle(tt.data), tt.now, tt.want)
			if act != tt.act {
				t.Fatalf("decide = %s (%s), want %s", act, why, tt.act)
			}
			if act == actionKeep {
				return
			}
			// Whatever was decided, the result must be kept on the next pass.
			data := mustApply(t, act, parseBundle(tt.data), tt.now, tt.want)
			if again, why := decide(parseBundle(data), tt.now, tt.want); again != actionKeep {
				t.Fatalf("after %s, decide = %s (%s), want keep", act, again, why)
			}
		})
	}
}

func TestRotateCAKeepsTrustInTheOldOne(t *testing.T) {
	first := mustApply(t, actionNewCA, bundle{}, t0, svcNames)
	now := t0.Add(7 * year)
	rotated := mustApply(t, actionRotateCA, parseBundle(first), now, svcNames)

	cas, err := parseCerts(rotated[KeyCA])
	if err != nil {
		t.Fatal(err)
	}
	oldCA, _ := parseCerts(first[KeyCA])
	if len(cas) != 2 || !cas[1].Equal(oldCA[0]) || cas[0].Equal(oldCA[0]) {
		t.Fatalf("ca.crt after rotation has %d CAs; want the new one first, then the old one", len(cas))
	}
	if got := parseBundle(rotated); got.cert.CheckSignatureFrom(cas[0]) != nil {
		t.Fatal("new serving certificate is not signed by the new CA")
	}
	if b := caBundle(rotated, now); len(mustCerts(t, b)) != 2 {
		t.Fatal("caBundle before the old CA expires should hold both CAs")
	}
	if b := caBundle(rotated, t0.Add(10*year+day)); len(mustCerts(t, b)) != 1 {
		t.Fatal("caBundle after the old CA expired should hold the new CA only")
	}
}

func TestServingCertificate(t *testing.T) {
	ip := net.ParseIP("127.0.0.1")
	data := mustApply(t, actionNewCA, bundle{}, t0, names{DNS: append(svcNames.DNS, "extra.example"), IPs: []net.IP{ip}})
	cert := parseBundle(data).cert
	for _, d := range []string{"coalmine-webhook.coalmine-system.svc", "coalmine-webhook.coalmine-system.svc.cluster.local", "extra.example"} {
		if err := cert.VerifyHostname(d); err != nil {
			t.Errorf("VerifyHostname(%s): %v", d, err)
		}
	}
	if err := cert.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("VerifyHostname(127.0.0.1): %v", err)
	}
	if got := cert.NotAfter.Sub(t0); got != year {
		t.Errorf("serving certificate lives %s after issue, want %s", got, year)
	}
	if !cert.NotBefore.Before(t0) {
		t.Error("serving certificate should be backdated to tolerate clock skew")
	}
}

func TestServingCertificateNeverOutlivesItsCA(t *testing.T) {
	data := mustApply(t, actionNewCA, bundle{}, t0, svcNames)
	ca := parseBundle(data).cas[0]
	// Short CA lifetime: issue a serving certificate shortly before the CA ends.
	renewed, err := apply(actionIssueServing, parseBundle(data), ca.NotAfter.Add(-30*day), svcNames, testV)
	if err != nil {
		t.Fatal(err)
	}
	if got := parseBundle(renewed).cert.NotAfter; got.After(ca.NotAfter) {
		t.Fatalf("serving certificate ends %s, after its CA %s", got, ca.NotAfter)
	}
}

func TestMissingNameIsAddedToTheExistingOnes(t *testing.T) {
	a := names{DNS: append(svcNames.DNS, "a.example")}
	b := names{DNS: append(svcNames.DNS, "b.example")}
	data := mustApply(t, actionNewCA, bundle{}, t0, a)
	act, _ := decide(parseBundle(data), t0, b)
	if act != actionIssueServing {
		t.Fatalf("decide = %s, want %s", act, actionIssueServing)
	}
	data = mustApply(t, act, parseBundle(data), t0, b)
	// Replicas configured with a and b now both keep it, instead of re-issuing in turn.
	for _, n := range []names{a, b} {
		if act, why := decide(parseBundle(data), t0, n); act != actionKeep {
			t.Fatalf("decide for %v = %s (%s), want keep", n.DNS, act, why)
		}
	}
}

func mustCerts(t *testing.T, pemData []byte) []*x509.Certificate {
	t.Helper()
	certs, err := parseCerts(pemData)
	if err != nil {
		t.Fatal(err)
	}
	return certs
}
