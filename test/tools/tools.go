// Package tools builds the third-party programs the tests, the demo and the
// benchmarks run (the Kubernetes control plane, etcd, kwok,
// amazon-ec2-metadata-mock, Helm, helm-docs and, for the benchmarks only,
// aws-node-termination-handler) from Go modules pinned in the sub-directories
// here, and caches the binaries in a directory named by tool, version and a
// digest of the pinning go.mod and go.sum. A warm cache costs a stat.
package tools

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// Tool is a set of programs built from one pinning module.
type Tool struct {
	// Name is the sub-directory holding the pinning go.mod.
	Name string
	// Version is the upstream version, part of the cache key.
	Version string
	// Packages are the main packages to build.
	Packages []string
	// LDFlags are passed to go build.
	LDFlags string
	// Tags are the build tags passed to go build (-tags), if any.
	Tags string
}

// The tools this repository pins.
var (
	Kubernetes = Tool{
		Name:    "k8s",
		Version: "v1.36.3",
		Packages: []string{
			"k8s.io/kubernetes/cmd/kube-apiserver",
			"k8s.io/kubernetes/cmd/kube-controller-manager",
			"k8s.io/kubernetes/cmd/kube-scheduler",
			"k8s.io/kubernetes/cmd/kubectl",
		},
		LDFlags: "-s -w -X k8s.io/component-base/version.gitVersion=v1.36.3" +
			" -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=36",
	}
	Etcd = Tool{Name: "etcd", Version: "v3.6.16", Packages: []string{"."}, LDFlags: "-s -w"}
	Kwok = Tool{Name: "kwok", Version: "v0.8.0", Packages: []string{"sigs.k8s.io/kwok/cmd/kwok"}, LDFlags: "-s -w"}
	// AEMM is amazon-ec2-metadata-mock; its binary is named "cmd" after its
	// package and installed as "ec2-metadata-mock".
	AEMM = Tool{Name: "aemm", Version: "v1.12.0", Packages: []string{"github.com/aws/amazon-ec2-metadata-mock/cmd"}, LDFlags: "-s -w"}
	// Helm lints and renders the chart.
	Helm = Tool{Name: "helm", Version: "v3.22.0", Packages: []string{"helm.sh/helm/v3/cmd/helm"},
		// As Helm's Makefile does: the default Kubernetes version of helm
		// template and lint follows the client-go Helm is built with.
		LDFlags: "-s -w -X helm.sh/helm/v3/internal/version.version=v3.22.0" +
			" -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/lint/rules.k8sVersionMinor=37" +
			" -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=37"}
	// HelmDocs writes the chart's README from its values.yaml.
	HelmDocs = Tool{Name: "helmdocs", Version: "v1.14.2", Packages: []string{"github.com/norwoodj/helm-docs/cmd/helm-docs"},
		LDFlags: "-s -w -X main.version=1.14.2"}
	// PrometheusOperator builds nothing: its module's source holds the
	// monitoring.coreos.com CRDs (see ModuleSourceDir).
	PrometheusOperator = Tool{Name: "promop", Version: "v0.85.0"}
	// NTH is aws-node-termination-handler, the anchor the benchmarks run
	// beside lastcall. Its Linux build needs the nthlinux tag (as its
	// Makefile's build does). It is not in All: only the benchmarks build
	// it, on demand (about 3 minutes cold on 2 cores). Its binary is named
	// "cmd" after its package and installed as "node-termination-handler".
	NTH = Tool{Name: "nth", Version: "v1.25.6", Packages: []string{"github.com/aws/aws-node-termination-handler/cmd"},
		LDFlags: "-s -w", Tags: "nthlinux"}
)

// PrometheusOperatorModule is the module whose source holds the CRDs, under
// example/prometheus-operator-crd.
const PrometheusOperatorModule = "github.com/prometheus-operator/prometheus-operator"

// All lists every pinned tool with programs to build for the tests (make
// tools); NTH, for the benchmarks only, is left out.
var All = []Tool{Kubernetes, Etcd, Kwok, AEMM, Helm, HelmDocs}

// ModuleDir is the directory of the tool's pinning module.
func (t Tool) ModuleDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "test", "tools", t.Name), nil
}

// RepoRoot finds the repository root: $LASTCALL_REPO, or the directory
// holding this source file's module.
func RepoRoot() (string, error) {
	if r := os.Getenv("LASTCALL_REPO"); r != "" {
		return r, nil
	}
	_, file, _, ok := runtime.Caller(0)
	if !ok || !filepath.IsAbs(file) {
		return "", errors.New("cannot locate the repository: set LASTCALL_REPO")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..")), nil
}

// CacheDir is where built tools live: $LASTCALL_CACHE_DIR, or lastcall/
// under the user cache directory.
func CacheDir() (string, error) {
	if d := os.Getenv("LASTCALL_CACHE_DIR"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory (set LASTCALL_CACHE_DIR): %w", err)
	}
	return filepath.Join(d, "lastcall"), nil
}

// key names the cache entry: tool, version and a digest of the pins.
func (t Tool) key() (string, error) {
	dir, err := t.ModuleDir()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	for _, f := range []string{"go.mod", "go.sum"} {
		b, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			return "", fmt.Errorf("reading the pins of %s: %w", t.Name, err)
		}
		h.Write(b)
	}
	h.Write([]byte(t.LDFlags + runtime.Version()))
	if t.Tags != "" { // only then, so the other tools' keys stay as they were
		h.Write([]byte("\x00tags=" + t.Tags))
	}
	return fmt.Sprintf("%s-%s-%s", t.Name, t.Version, hex.EncodeToString(h.Sum(nil))[:10]), nil
}

// Build makes sure the tool's binaries are in the cache and returns the
// directory holding them. Concurrent callers (parallel test packages) wait on
// a file lock instead of building twice.
func Build(ctx context.Context, t Tool) (string, error) {
	cache, err := CacheDir()
	if err != nil {
		return "", err
	}
	key, err := t.key()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(cache, "bin", key)
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil
	}
	if err := os.MkdirAll(filepath.Join(cache, "bin"), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(cache, "bin", "."+key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	Progress("waiting for %s %s: building it, or waiting for another process that is (cached in %s)", t.Name, t.Version, cache)
	if err := lockFile(lock); err != nil {
		return "", fmt.Errorf("locking the tool cache: %w", err)
	}
	defer unlockFile(lock) //nolint:errcheck
	if _, err := os.Stat(filepath.Join(dir, ".complete")); err == nil {
		return dir, nil // built by another process while we waited
	}
	modDir, err := t.ModuleDir()
	if err != nil {
		return "", err
	}
	tmp, err := os.MkdirTemp(filepath.Join(cache, "bin"), "."+key+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	args := []string{"build", "-trimpath", "-ldflags", t.LDFlags}
	if t.Tags != "" {
		args = append(args, "-tags", t.Tags)
	}
	args = append(args, "-o", tmp+string(filepath.Separator))
	args = append(args, t.Packages...)
	Progress("building %s %s from the Go module proxy, once for this version (about %s on 2 cores with cold caches); later runs take it from %s",
		t.Name, t.Version, buildEstimate(t), dir)
	started := time.Now()
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-mod=mod")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s %s in %s (go %s): %w\n%s",
			t.Name, t.Version, modDir, strings.Join(args, " "), err, tail(out.String(), 40))
	}
	// Tools whose main package is named cmd get their program's name.
	if name, ok := map[string]string{AEMM.Name: "ec2-metadata-mock", NTH.Name: "node-termination-handler"}[t.Name]; ok {
		if err := os.Rename(filepath.Join(tmp, "cmd"), filepath.Join(tmp, name)); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(t.Version+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", err
	}
	Progress("built %s %s in %s", t.Name, t.Version, time.Since(started).Round(time.Second))
	return dir, nil
}

// Progress tells, on standard error, what a slow first run is doing.
// LASTCALL_QUIET=1 silences it.
func Progress(format string, args ...any) {
	if os.Getenv("LASTCALL_QUIET") != "" {
		return
	}
	fmt.Fprintf(os.Stderr, "lastcall tools: "+format+"\n", args...)
}

// buildEstimate is how long building t takes with cold caches on 2 cores,
// as measured.
func buildEstimate(t Tool) string {
	switch t.Name {
	case Kubernetes.Name:
		return "4 to 6 minutes"
	case Kwok.Name, Helm.Name, HelmDocs.Name, NTH.Name:
		return "1 minute"
	}
	return "30 seconds"
}

// Binary builds the tool if needed and returns the path of one of its
// programs.
func Binary(ctx context.Context, t Tool, name string) (string, error) {
	dir, err := Build(ctx, t)
	if err != nil {
		return "", err
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("tool %s has no program %q: %w", t.Name, name, err)
	}
	return p, nil
}

// ModuleSourceDir returns the extracted source directory of a module the
// tool pins, for data files shipped inside it (kwok's stage manifests).
func ModuleSourceDir(ctx context.Context, t Tool, module string) (string, error) {
	modDir, err := t.ModuleDir()
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", module)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	out, err := cmd.CombinedOutput()
	dir := strings.TrimSpace(string(out))
	if err != nil || dir == "" {
		// The module may not be downloaded yet.
		dl := exec.CommandContext(ctx, "go", "mod", "download", module)
		dl.Dir, dl.Env = modDir, cmd.Env
		if dout, derr := dl.CombinedOutput(); derr != nil {
			return "", fmt.Errorf("downloading %s: %w\n%s", module, derr, dout)
		}
		cmd = exec.CommandContext(ctx, "go", "list", "-m", "-f", "{{.Dir}}", module)
		cmd.Dir, cmd.Env = modDir, dl.Env
		out, err = cmd.CombinedOutput()
		dir = strings.TrimSpace(string(out))
		if err != nil || dir == "" {
			return "", fmt.Errorf("locating %s: %v\n%s", module, err, out)
		}
	}
	return dir, nil
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
