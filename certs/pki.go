package certs

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"slices"
	"time"
)

// Keys of the serving Secret. They match what cert-manager writes into a Certificate's
// Secret (plus ca.key, which only the self-managed mode has), so both modes leave the same
// shape behind and the webhook server reads the same files.
const (
	KeyCert   = "tls.crt"
	KeyKey    = "tls.key"
	KeyCA     = "ca.crt"
	KeyCAKey  = "ca.key"
	pemCert   = "CERTIFICATE"
	pemECKey  = "EC PRIVATE KEY"
	backdate  = time.Hour // tolerates clock skew between replicas and the apiserver
	renewDiv  = 3         // renew when less than 1/renewDiv of the lifetime is left
	caSubject = "coalmine-webhook-ca"
)

// action is what a pass must do to the Secret's contents.
type action int

const (
	// actionKeep: CA and serving certificate are valid and not near expiry.
	actionKeep action = iota
	// actionIssueServing: keep the CA, issue a new serving certificate.
	actionIssueServing
	// actionRotateCA: the CA is near its end; make a new one, keep the old one in the
	// bundle so certificates it signed stay trusted while replicas switch over.
	actionRotateCA
	// actionNewCA: there is no usable CA; start from scratch.
	actionNewCA
)

func (a action) String() string {
	switch a {
	case actionKeep:
		return "keep"
	case actionIssueServing:
		return "issue serving certificate"
	case actionRotateCA:
		return "rotate CA"
	case actionNewCA:
		return "create CA"
	}
	return fmt.Sprintf("action(%d)", int(a))
}

// names are the subject alternative names a serving certificate must carry.
type names struct {
	DNS []string
	IPs []net.IP
}

// coveredBy reports whether cert carries every wanted name (extra names are fine: two
// replicas configured with different extra names then converge on the union instead of
// re-issuing in turn forever).
func (n names) coveredBy(cert *x509.Certificate) (missing string, ok bool) {
	for _, d := range n.DNS {
		if !slices.Contains(cert.DNSNames, d) {
			return d, false
		}
	}
	for _, ip := range n.IPs {
		if !slices.ContainsFunc(cert.IPAddresses, ip.Equal) {
			return ip.String(), false
		}
	}
	return "", true
}

// union adds the names of cert that n lacks.
func (n names) union(cert *x509.Certificate) names {
	out := names{DNS: slices.Clone(n.DNS), IPs: slices.Clone(n.IPs)}
	if cert == nil {
		return out
	}
	for _, d := range cert.DNSNames {
		if !slices.Contains(out.DNS, d) {
			out.DNS = append(out.DNS, d)
		}
	}
	for _, ip := range cert.IPAddresses {
		if !slices.ContainsFunc(out.IPs, ip.Equal) {
			out.IPs = append(out.IPs, ip)
		}
	}
	return out
}

// bundle is the parsed content of the serving Secret.
type bundle struct {
	// cas holds every CA certificate of ca.crt; cas[0] is the current one, signed for by
	// caKey. Later ones are previous CAs kept until they expire.
	cas     []*x509.Certificate
	caKey   crypto.Signer
	cert    *x509.Certificate // serving certificate
	certErr error             // why cert is unusable, if it is
}

// parseBundle reads what it can; fields it cannot read stay nil, so decide can tell a
// broken serving certificate (re-issue) from a broken CA (start over).
func parseBundle(data map[string][]byte) bundle {
	var b bundle
	cas, err := parseCerts(data[KeyCA])
	if err == nil && len(cas) > 0 {
		if key, kerr := parseKey(data[KeyCAKey]); kerr == nil && publicKeysEqual(cas[0].PublicKey, key.Public()) {
			b.cas, b.caKey = cas, key
		}
	}
	if _, err := tls.X509KeyPair(data[KeyCert], data[KeyKey]); err != nil {
		b.certErr = fmt.Errorf("read key pair: %w", err)
		return b
	}
	certs, err := parseCerts(data[KeyCert])
	if err != nil || len(certs) == 0 {
		b.certErr = fmt.Errorf("parse serving certificate: %w", err)
		return b
	}
	b.cert = certs[0]
	return b
}

// nearEnd reports whether less than a third of cert's lifetime is left at now (or it
// has expired).
func nearEnd(cert *x509.Certificate, now time.Time) bool {
	lifetime := cert.NotAfter.Sub(cert.NotBefore)
	return cert.NotAfter.Sub(now) < lifetime/renewDiv
}

// decide says what to do with the Secret's contents at now, and why (for the log).
func decide(b bundle, now time.Time, want names) (action, string) {
	if len(b.cas) == 0 {
		return actionNewCA, "no usable CA certificate and key"
	}
	ca := b.cas[0]
	if now.After(ca.NotAfter) {
		return actionNewCA, fmt.Sprintf("CA expired at %s", ca.NotAfter.UTC().Format(time.RFC3339))
	}
	if nearEnd(ca, now) {
		return actionRotateCA, fmt.Sprintf("CA expires at %s, less than a third of its lifetime left", ca.NotAfter.UTC().Format(time.RFC3339))
	}
	if b.cert == nil {
		return actionIssueServing, fmt.Sprintf("no usable serving certificate: %v", b.certErr)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := b.cert.Verify(x509.VerifyOptions{
		Roots:       roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return actionIssueServing, fmt.Sprintf("serving certificate does not verify against the current CA: %v", err)
	}
	if missing, ok := want.coveredBy(b.cert); !ok {
		return actionIssueServing, fmt.Sprintf("serving certificate lacks the name %q", missing)
	}
	if nearEnd(b.cert, now) {
		return actionIssueServing, fmt.Sprintf("serving certificate expires at %s, less than a third of its lifetime left", b.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	return actionKeep, "valid"
}

// validity is how long new certificates live.
type validity struct {
	CA, Serving time.Duration
}

// apply performs act on b and returns the Secret data to store. It is only called when
// act is not actionKeep.
func apply(act action, b bundle, now time.Time, want names, v validity) (map[string][]byte, error) {
	cas, caKey := b.cas, b.caKey
	switch act {
	case actionNewCA, actionRotateCA:
		ca, key, err := newCA(now, v.CA)
		if err != nil {
			return nil, err
		}
		kept := []*x509.Certificate{ca}
		if act == actionRotateCA {
			// Replicas that have not re-read the Secret yet still serve certificates
			// signed by the old CA: keep trusting it until it expires.
			for _, old := range cas {
				if now.Before(old.NotAfter) {
					kept = append(kept, old)
				}
			}
		}
		cas, caKey = kept, key
	case actionIssueServing:
		// Keep names another replica asked for (see names.coveredBy), unless the
		// certificate is being replaced because it is unusable or near its end anyway.
		if b.cert != nil {
			if _, ok := want.coveredBy(b.cert); !ok && !nearEnd(b.cert, now) {
				want = want.union(b.cert)
			}
		}
	default:
		return nil, fmt.Errorf("apply %s: nothing to do", act)
	}
	certPEM, keyPEM, err := newServing(cas[0], caKey, now, v.Serving, want)
	if err != nil {
		return nil, err
	}
	caKeyPEM, err := encodeKey(caKey)
	if err != nil {
		return nil, err
	}
	var caPEM bytes.Buffer
	for _, c := range cas {
		_ = pem.Encode(&caPEM, &pem.Block{Type: pemCert, Bytes: c.Raw})
	}
	return map[string][]byte{
		KeyCert:  certPEM,
		KeyKey:   keyPEM,
		KeyCA:    caPEM.Bytes(),
		KeyCAKey: caKeyPEM,
	}, nil
}

// caBundle is what webhook configurations must trust: every CA in ca.crt that has not
// expired at now, current first.
func caBundle(data map[string][]byte, now time.Time) []byte {
	cas, _ := parseCerts(data[KeyCA])
	var out bytes.Buffer
	for _, c := range cas {
		if now.Before(c.NotAfter) {
			_ = pem.Encode(&out, &pem.Block{Type: pemCert, Bytes: c.Raw})
		}
	}
	return out.Bytes()
}

func newCA(now time.Time, lifetime time.Duration) (*x509.Certificate, crypto.Signer, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The timestamp tells CAs of successive rotations apart in a bundle.
		Subject:               pkix.Name{CommonName: fmt.Sprintf("%s@%d", caSubject, now.Unix())},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA certificate: %w", err)
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	return ca, key, nil
}

func newServing(ca *x509.Certificate, caKey crypto.Signer, now time.Time, lifetime time.Duration, want names) (certPEM, keyPEM []byte, err error) {
	if len(want.DNS) == 0 && len(want.IPs) == 0 {
		return nil, nil, errors.New("issue serving certificate: no DNS names or IP addresses")
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate serving key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.NotAfter) {
		// A certificate outliving its CA would fail verification before it is renewed.
		notAfter = ca.NotAfter
	}
	cn := ""
	if len(want.DNS) > 0 {
		cn = want.DNS[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    now.Add(-backdate),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     want.DNS,
		IPAddresses:  want.IPs,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("sign serving certificate: %w", err)
	}
	keyPEM, err = encodeKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemCert, Bytes: der}), keyPEM, nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return serial, nil
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	ec, ok := key.(*ecdsa.PrivateKey)
	if !ok {
		der, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, fmt.Errorf("encode private key: %w", err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
	}
	der, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		return nil, fmt.Errorf("encode private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: pemECKey, Bytes: der}), nil
}

func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != pemCert {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate found")
	}
	return out, nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM private key found")
	}
	switch block.Type {
	case pemECKey:
		return x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("private key of type %T cannot sign", k)
		}
		return s, nil
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("unsupported private key type %q", block.Type)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type equaler interface{ Equal(crypto.PublicKey) bool }
	ea, ok := a.(equaler)
	return ok && ea.Equal(b)
}
