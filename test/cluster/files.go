package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
)

// localhost is the only address anything of the cluster binds.
const localhost = "127.0.0.1"

// Ports are picked at random from [portFloor, start of the kernel's
// ephemeral range), so that the outgoing connections of the cluster's own
// programs, which take ephemeral ports, cannot take them between the pick
// and the bind.
const (
	portFloor          = 10000
	ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	defaultEphemeral   = 32768
	portTries          = 200
)

// freePorts returns n distinct TCP ports that were free on 127.0.0.1 a moment
// ago. All listeners stay open until every port is picked, so the ports
// differ from each other.
func freePorts(n int) ([]int, error) {
	ceiling := ephemeralStart()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n; try++ {
		port := 0 // let the kernel choose, if no room below the ephemeral range
		if ceiling-portFloor > 1000 && try < portTries {
			port = portFloor + mrand.IntN(ceiling-portFloor)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(localhost, strconv.Itoa(port)))
		if err != nil {
			if port == 0 {
				return nil, fmt.Errorf("picking a free port: %w", err)
			}
			continue
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// ephemeralStart returns the first port of the kernel's ephemeral range.
func ephemeralStart() int {
	b, err := os.ReadFile(ephemeralRangeFile)
	if err != nil {
		return defaultEphemeral
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return defaultEphemeral
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return defaultEphemeral
	}
	return low
}

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
