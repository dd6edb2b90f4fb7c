package cluster

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"
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

// SlowReadyLabel marks the pods that kwok makes Running and Ready
// SlowReadyDelay after they are created rather than at once, like a
// container that takes a while to pass its readiness probe: kwok's
// pod-ready stage leaves them to a copy of itself, pod-ready-slow, applied
// SlowReadyDelay after kwok sees the pod on its node (moments after the
// pod is created and scheduled). The label's value does not matter. Every
// other pod keeps kwok's fast behaviour.
const (
	SlowReadyLabel = "lastcall.test/slow-ready"
	SlowReadyDelay = 2 * time.Second
)

// ServedLabel marks the pods kwok leaves entirely to another runtime (package
// test/emulators/podrun): none of kwok's pod stages (ready, complete,
// delete) applies to them, so they stay Pending, and Terminating once
// deleted, until that runtime acts. The label's value does not matter to
// kwok.
const ServedLabel = "lastcall.test/served"

// KwokPodCIDR is the range kwok takes pod IPs from. It is outside
// 127.0.0.0/8, which the API server refuses in EndpointSlices; no packet is
// ever sent to these addresses.
const KwokPodCIDR = "10.240.0.0/16"

// The stages kwok runs for pods.
const (
	podReadyStage    = "kustomize/stage/pod/fast/pod-ready.yaml"
	podCompleteStage = "kustomize/stage/pod/fast/pod-complete.yaml"
	podDeleteStage   = "kustomize/stage/pod/fast/pod-delete.yaml"
)

// kwokStageFiles lists the stage manifests, relative to the kwok module,
// that make nodes Ready and keep them so with leases, and take pods through
// Running, Ready, completion and deletion at once.
func kwokStageFiles() []string {
	return []string{
		"kustomize/stage/node/fast/node-initialize.yaml",
		"kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
		podReadyStage,
		podCompleteStage,
		podDeleteStage,
	}
}

// writeKwokStages writes kwok's stages from its module source into one
// multi-document YAML file, with pod-ready split in two by SlowReadyLabel
// and every pod stage excluding the pods with ServedLabel.
func writeKwokStages(path, kwokModuleDir string) error {
	var docs []string
	for _, f := range kwokStageFiles() {
		b, err := os.ReadFile(filepath.Join(kwokModuleDir, filepath.FromSlash(f)))
		if err != nil {
			return fmt.Errorf("reading kwok stage %s: %w", f, err)
		}
		var stages []string
		switch f {
		case podReadyStage:
			stages, err = splitPodReady(b)
		case podCompleteStage, podDeleteStage:
			var doc string
			doc, err = editStage(b, "", 0, notServed())
			stages = []string{doc}
		default:
			stages = []string{strings.TrimSpace(string(b))}
		}
		if err != nil {
			return fmt.Errorf("kwok stage %s: %w", f, err)
		}
		docs = append(docs, stages...)
	}
	if err := os.WriteFile(path, []byte(strings.Join(docs, "\n---\n")+"\n"), 0o644); err != nil {
		return fmt.Errorf("writing kwok stages: %w", err)
	}
	return nil
}

// notServed is the selector expression of every pod stage: the pod does not
// carry ServedLabel.
func notServed() map[string]any { return labelExpr(ServedLabel, "DoesNotExist") }

// labelExpr is a stage selector expression on a pod label.
func labelExpr(label, op string) map[string]any {
	return map[string]any{"key": fmt.Sprintf(".metadata.labels[%q]", label), "operator": op}
}

// splitPodReady turns kwok's pod-ready stage into two: itself, for pods
// without SlowReadyLabel, and pod-ready-slow, the same stage for pods with
// the label, applied SlowReadyDelay after kwok sees the pod on its node.
// Neither applies to pods with ServedLabel.
func splitPodReady(stage []byte) ([]string, error) {
	fast, err := editStage(stage, "pod-ready", 0, notServed(), labelExpr(SlowReadyLabel, "DoesNotExist"))
	if err != nil {
		return nil, err
	}
	slow, err := editStage(stage, "pod-ready-slow", SlowReadyDelay, notServed(), labelExpr(SlowReadyLabel, "Exists"))
	if err != nil {
		return nil, err
	}
	return []string{fast, slow}, nil
}

// editStage returns a copy of a kwok stage with exprs added to its selector,
// renamed to name unless name is empty, and delayed by delay if it is not
// zero.
func editStage(stage []byte, name string, delay time.Duration, exprs ...map[string]any) (string, error) {
	var doc map[string]any
	if err := yaml.Unmarshal(stage, &doc); err != nil {
		return "", err
	}
	spec, _ := doc["spec"].(map[string]any)
	sel, _ := spec["selector"].(map[string]any)
	old, ok := sel["matchExpressions"].([]any)
	if !ok {
		return "", errors.New("no spec.selector.matchExpressions to extend")
	}
	for _, e := range exprs {
		old = append(old, e)
	}
	sel["matchExpressions"] = old
	if delay > 0 {
		spec["delay"] = map[string]any{"durationMilliseconds": delay.Milliseconds()}
	}
	if name != "" {
		doc["metadata"] = map[string]any{"name": name}
	}
	out, err := yaml.Marshal(doc)
	return strings.TrimSpace(string(out)), err
}
