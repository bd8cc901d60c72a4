package kubebed

// Credentials, made fresh for every cluster: a CA, the API server's serving
// certificate (its address, the kubernetes Service address and names), the
// service-account signing key, and static bearer tokens: one admin, one per
// node. Authorization is RBAC, so a DaemonSet's ServiceAccount gets exactly
// what its ClusterRole grants; the admin and the nodes are in
// system:masters (the Node authorizer is not enabled; a test bed needs no
// node isolation). The kubelets serve with self-signed certificates and
// allow anonymous requests (apiserver → kubelet for exec and logs): they
// listen only inside their network namespaces.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// pki holds the cluster's credentials and the files made of them.
type pki struct {
	caPEM      []byte
	caFile     string // ca.crt
	certFile   string // apiserver.crt
	keyFile    string // apiserver.key
	saKeyFile  string // sa.key (signing)
	saPubFile  string // sa.pub
	tokensFile string // static token file
	adminToken string
	nodeTokens map[string]string // node name -> token
}

func randomToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writePEM(file, typ string, der []byte) error {
	return os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// makePKI writes the credentials into dir and the kubeconfigs.
func (c *Cluster) makePKI() (*pki, error) {
	dir := filepath.Join(c.Dir, "pki")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	p := &pki{
		caFile: filepath.Join(dir, "ca.crt"), certFile: filepath.Join(dir, "apiserver.crt"),
		keyFile: filepath.Join(dir, "apiserver.key"), saKeyFile: filepath.Join(dir, "sa.key"),
		saPubFile: filepath.Join(dir, "sa.pub"), tokensFile: filepath.Join(dir, "tokens.csv"),
		adminToken: randomToken(), nodeTokens: map[string]string{},
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: c.Prefix + "-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, BasicConstraintsValid: true, IsCA: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("ca: %w", err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	if err := os.WriteFile(p.caFile, p.caPEM, 0o644); err != nil {
		return nil, err
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(7 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IP(c.ControlPlane.IP.AsSlice()), net.ParseIP(APIServerIP), net.ParseIP("127.0.0.1")},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
			"kubernetes.default.svc.cluster.local"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("apiserver cert: %w", err)
	}
	if err := writePEM(p.certFile, "CERTIFICATE", srvDER); err != nil {
		return nil, err
	}
	if err := writeECKey(p.keyFile, srvKey); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	if err := writeECKey(p.saKeyFile, saKey); err != nil {
		return nil, err
	}
	saPub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := writePEM(p.saPubFile, "PUBLIC KEY", saPub); err != nil {
		return nil, err
	}
	tokens := []string{fmt.Sprintf("%s,kubebed-admin,admin-uid,system:masters", p.adminToken)}
	for _, n := range c.Nodes {
		tok := randomToken()
		p.nodeTokens[n.Name] = tok
		tokens = append(tokens, fmt.Sprintf("%s,system:node:%s,%s-uid,\"system:nodes,system:masters\"", tok, n.Name, n.Name))
	}
	if err := os.WriteFile(p.tokensFile, []byte(strings.Join(tokens, "\n")+"\n"), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.Kubeconfig, c.kubeconfig(p, p.adminToken), 0o600); err != nil {
		return nil, err
	}
	for _, n := range c.Nodes {
		if err := os.MkdirAll(n.Dir, 0o755); err != nil {
			return nil, err
		}
		if err := os.WriteFile(n.Kubeconfig, c.kubeconfig(p, p.nodeTokens[n.Name]), 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func writeECKey(file string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return writePEM(file, "EC PRIVATE KEY", der)
}

// apiURL is the API server's address on the switch.
func (c *Cluster) apiURL() string {
	return "https://" + net.JoinHostPort(c.ControlPlane.IP.String(), "6443")
}

// kubeconfig returns a self-contained kubeconfig (CA inline) with token.
func (c *Cluster) kubeconfig(p *pki, token string) []byte {
	return fmt.Appendf(nil, `apiVersion: v1
kind: Config
clusters:
- name: kubebed
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: kubebed
  user:
    token: %s
contexts:
- name: kubebed
  context: {cluster: kubebed, user: kubebed}
current-context: kubebed
`, c.apiURL(), base64.StdEncoding.EncodeToString(p.caPEM), token)
}
