package nth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPreflight(t *testing.T) {
	found := func(string) (string, error) { return "/usr/bin/unshare", nil }
	missing := func(string) (string, error) { return "", errors.New("executable file not found in $PATH") }
	for _, tc := range []struct {
		name     string
		euid     int
		lookPath func(string) (string, error)
		want     string // in the error; empty: no error
	}{
		{"root with unshare", 0, found, ""},
		{"not root", 1000, found, "needs root"},
		{"no unshare", 0, missing, "unshare(1) not found"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := preflight(func() int { return tc.euid }, tc.lookPath)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("preflight: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("preflight = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestClusterRoleIsTheChartsOwn renders NTH's ClusterRole from its chart
// (this downloads NTH's module source; it builds nothing) and checks the
// permissions its drain uses.
func TestClusterRoleIsTheChartsOwn(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()
	role, err := ClusterRole(ctx)
	if err != nil {
		t.Fatal(err)
	}
	allows := func(group, resource, verb string) bool {
		for _, r := range role.Rules {
			if slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) {
				return true
			}
		}
		return false
	}
	for _, want := range []struct{ group, resource, verb string }{
		{"", "nodes", "patch"},
		{"", "nodes", "get"},
		{"", "pods", "list"},
		{"", "pods/eviction", "create"},
		{"apps", "daemonsets", "get"},
	} {
		if !allows(want.group, want.resource, want.verb) {
			t.Errorf("NTH's ClusterRole does not allow %s %s/%s: %+v", want.verb, want.group, want.resource, role.Rules)
		}
	}
	// Events are granted only with emitKubernetesEvents, off by default.
	if allows("", "events", "create") {
		t.Errorf("NTH's ClusterRole with the chart's defaults allows creating Events: %+v", role.Rules)
	}
}
