package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestNoReflectiveMethodLookup keeps text/template and html/template out
// of the binary: their executors call reflect.Value.MethodByName, which
// makes the linker keep every exported method of every type, and lastcall
// then grows from 33 MB to 85 MB and idles at 14 MiB more. Webhook bodies
// are built-in payloads, or JSON with ${field} placeholders (pkg/notify).
func TestNoReflectiveMethodLookup(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == "text/template" || pkg == "html/template" {
			t.Errorf("lastcall imports %s (through some dependency): see the comment", pkg)
		}
	}
}

// TestOnlyTheWiringKnowsClouds keeps the core below the clouds: no package
// of pkg/ but pkg/app (which registers the providers) imports providers/,
// directly or not.
func TestOnlyTheWiringKnowsClouds(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", `{{.ImportPath}} {{join .Deps " "}}`, "github.com/lastcall/lastcall/pkg/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	const providers = "github.com/lastcall/lastcall/providers/"
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		pkg, deps, _ := strings.Cut(line, " ")
		if pkg == "github.com/lastcall/lastcall/pkg/app" {
			continue
		}
		for _, d := range strings.Fields(deps) {
			if strings.HasPrefix(d, providers) {
				t.Errorf("%s imports %s: only pkg/app may", pkg, d)
			}
		}
	}
}

// TestNoKubectlInTheDaemon keeps k8s.io/kubectl and k8s.io/cli-runtime
// (and what they bring: cobra, text/template printers, kustomize) in the
// kubectl plugin's binary, cmd/kubectl-lastcall: the daemon on every node
// carries neither.
func TestNoKubectlInTheDaemon(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", ".").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if strings.HasPrefix(pkg, "k8s.io/kubectl/") || strings.HasPrefix(pkg, "k8s.io/cli-runtime/") ||
			pkg == "github.com/lastcall/lastcall/pkg/kubectlplugin" {
			t.Errorf("lastcall imports %s: it belongs to the kubectl plugin", pkg)
		}
	}
}
