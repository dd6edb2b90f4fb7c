package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// localhost is the only address anything of the cluster binds.
const localhost = "127.0.0.1"

// randomToken returns 32 random hex characters.
func randomToken() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("making a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// writeTokenFile writes the apiserver's static token file: one admin user in
// system:masters.
func writeTokenFile(path, token string) error {
	line := strings.Join([]string{token, "admin", "admin-uid", "system:masters"}, ",") + "\n"
	if err := os.WriteFile(path, []byte(line), 0o600); err != nil {
		return fmt.Errorf("writing the token file: %w", err)
	}
	return nil
}

// writeServiceAccountKey writes a new RSA private key in PEM, used by the
// apiserver to sign and verify service account tokens and by the
// controller-manager.
func writeServiceAccountKey(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return fmt.Errorf("generating the service account key: %w", err)
	}
	block := &pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}
	if err := os.WriteFile(path, pem.EncodeToMemory(block), 0o600); err != nil {
		return fmt.Errorf("writing the service account key: %w", err)
	}
	return nil
}

// writeKubeconfig writes an admin kubeconfig for server, trusting the
// certificates in ca (embedded) and authenticating with token.
func writeKubeconfig(path, server string, ca []byte, token string) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["lastcall"] = &clientcmdapi.Cluster{Server: server, CertificateAuthorityData: ca}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{Token: token}
	cfg.Contexts["lastcall"] = &clientcmdapi.Context{Cluster: "lastcall", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "lastcall"
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		return fmt.Errorf("writing the kubeconfig: %w", err)
	}
	return nil
}

// kwokStageFiles lists the stage manifests, relative to the kwok module,
// that make nodes Ready and keep them so with leases, and take pods through
// Running, Ready, completion and deletion at once.
func kwokStageFiles() []string {
	return []string{
		"kustomize/stage/node/fast/node-initialize.yaml",
		"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		"kustomize/stage/pod/fast/pod-ready.yaml",
		"kustomize/stage/pod/fast/pod-complete.yaml",
		"kustomize/stage/pod/fast/pod-delete.yaml",
	}
}

// writeKwokStages concatenates kwok's stage manifests from its module source
// into one multi-document YAML file.
func writeKwokStages(path, kwokModuleDir string) error {
	var docs []string
	for _, f := range kwokStageFiles() {
		b, err := os.ReadFile(filepath.Join(kwokModuleDir, filepath.FromSlash(f)))
		if err != nil {
			return fmt.Errorf("reading kwok stage %s: %w", f, err)
		}
		docs = append(docs, strings.TrimSpace(string(b)))
	}
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing kwok stages: %w", err)
	}
	return nil
}
