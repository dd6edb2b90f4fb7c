package e2e

import (
	"os"
	"regexp"
	"strconv"
	"testing"

	corev1 "k8s.io/api/core/v1"
)

// releasedLine is the agent's log line once it has released its start-up
// pages, in the text log format.
var releasedLine = regexp.MustCompile(`msg="released the binary's start-up pages" mappings=(\d+) mapped_mib=[0-9.]+ resident_file_mib_before=([0-9.]+) resident_file_mib_after=([0-9.]+)`)

// The agent, as shipped and with its default settings, releases the pages
// of its binary that start-up touched once every source has read once;
// it then still takes a spot notice and drains its node, running code
// that faults back in from the page cache.
func TestAgentReleasesStartupPages(t *testing.T) {
	bin := buildLastcall(t)
	ns := newNamespace(t)
	name := newNode(t, "release", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 3, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 3 })

	quiet := startAEMM(t, quietAEMM())
	proxy := newSwitchProxy(t, quiet.URL())
	p, _ := startAgentProcess(t, bin, name, proxy.url, "agent")

	var m []string
	eventually(t, "the agent to log that it released its start-up pages", func() bool {
		b, err := os.ReadFile(p.LogPath)
		if err != nil {
			t.Fatal(err)
		}
		m = releasedLine.FindStringSubmatch(string(b))
		return m != nil
	})
	mappings, _ := strconv.Atoi(m[1])
	before, _ := strconv.ParseFloat(m[2], 64)
	after, _ := strconv.ParseFloat(m[3], 64)
	if mappings < 2 || after >= before {
		t.Fatalf("released %d mappings, resident file pages %.1f MiB before and %.1f after: want at least code and read-only data, and fewer pages after",
			mappings, before, after)
	}

	proxy.set(t, spotNotice(t).URL())
	waitNode(t, name, func(n *corev1.Node) bool { return n.Spec.Unschedulable && hasTaint(n, spotTaint) })
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 0 })
	waitEvents(t, "default", name, "Cordoned", "DrainStarted", "DrainCompleted")
}
