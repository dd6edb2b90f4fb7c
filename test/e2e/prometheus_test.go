package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/lastcall/lastcall/test/chart"
	"github.com/lastcall/lastcall/test/emulators/aemm"
	"github.com/lastcall/lastcall/test/emulators/child"
)

// prometheus is a real Prometheus (Debian's package) scraping lastcall.
type prometheus struct {
	url string
	// alerts is how many alerting rules the chart ships.
	alerts int
}

// startPrometheus runs Prometheus scraping target every 500 ms, with the
// chart's alerting rules loaded, until the test ends.
func startPrometheus(t *testing.T, target string) *prometheus {
	t.Helper()
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Fatalf("prometheus not found (Debian package prometheus; make tools installs it): %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rules, err := chart.Rules(ctx)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	config := fmt.Sprintf(`global:
  scrape_interval: 500ms
  evaluation_interval: 500ms
rule_files: [rules.yaml]
scrape_configs:
  - job_name: lastcall
    static_configs:
      - targets: [%q]
        labels: {namespace: lastcall, pod: lastcall-e2e}
`, target)
	for name, body := range map[string][]byte{"prometheus.yml": []byte(config), "rules.yaml": rules} {
		if err := os.WriteFile(filepath.Join(dir, name), body, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Prometheus needs up to a few seconds to open its storage: the
	// readiness path answers 503 until then.
	var srv *child.Server
	for attempt := 0; srv == nil; attempt++ {
		port, err := child.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := net.JoinHostPort(child.Localhost, strconv.Itoa(port))
		srv, err = child.Start(ctx, child.Spec{
			Bin: bin, Dir: dir, LogPath: filepath.Join(dir, fmt.Sprintf("prometheus-%d.log", attempt)),
			Args: []string{"--config.file=" + filepath.Join(dir, "prometheus.yml"),
				"--storage.tsdb.path=" + filepath.Join(dir, "data"), "--web.listen-address=" + addr},
			URL: "http://" + addr, ReadyPath: "/-/ready",
		})
		if err != nil && (attempt >= 3 || !strings.Contains(err.Error(), "address already in use")) {
			t.Fatalf("starting prometheus: %v", err)
		}
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("prometheus log:\n%s", srv.Tail(30))
		}
		srv.Stop()
	})
	p := &prometheus{url: srv.URL(), alerts: len(regexp.MustCompile(`(?m)^\s*- alert:`).FindAll(rules, -1))}
	eventually(t, "Prometheus ready", func() bool {
		resp, err := http.Get(p.url + "/-/ready")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	return p
}

// query returns the value of an instant query that yields one sample, and
// whether it yielded one.
func (p *prometheus) query(t *testing.T, q string) (float64, bool) {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(q))
	if err != nil {
		t.Fatalf("query %s: %v", q, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &r); err != nil || r.Status != "success" {
		t.Fatalf("query %s: %v %s %s", q, err, r.Error, body)
	}
	if len(r.Data.Result) != 1 {
		return 0, false
	}
	v, err := strconv.ParseFloat(r.Data.Result[0].Value[1].(string), 64)
	if err != nil {
		t.Fatalf("query %s: value %v: %v", q, r.Data.Result[0].Value[1], err)
	}
	return v, true
}

// waitValue waits until q yields want.
func (p *prometheus) waitValue(t *testing.T, q string, want float64) {
	t.Helper()
	var last float64
	var ok bool
	deadline := time.Now().Add(waitTimeout)
	for time.Now().Before(deadline) {
		if last, ok = p.query(t, q); ok && last == want {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("Prometheus: %s = %v (present: %v), want %v", q, last, ok, want)
}

// A real Prometheus scrapes a node agent before and through a spot drain;
// its queries of lastcall's metrics tell what happened, and the chart's
// alerting rules load and evaluate against them.
func TestPrometheusScrapesADrain(t *testing.T) {
	ns := newNamespace(t)
	name := newNode(t, "prom", nil)
	on := map[string]string{"kubernetes.io/hostname": name}
	create(t, deployment(ns, "web", 4, on, 30), env.Client.AppsV1().Deployments(ns).Create)
	create(t, daemonSet(ns, "logs", on), env.Client.AppsV1().DaemonSets(ns).Create)
	waitPods(t, ns, func(p []*corev1.Pod) bool { return countReady(onNode(p, name)) == 5 })

	completed := &aemm.ScheduledEvent{State: "completed"}
	quiet := quietAEMM()
	quiet.Events = completed
	calm := startAEMM(t, quiet)
	spot := startAEMM(t, aemm.Config{RebalanceDelay: aemm.Never, ASGTerminationDelay: aemm.Never, Events: completed})
	proxy := newSwitchProxy(t, calm.URL())
	a := startAgent(t, name, proxy.url)

	target, err := url.Parse(a.url)
	if err != nil {
		t.Fatal(err)
	}
	prom := startPrometheus(t, target.Host)
	// Before: the target is up, its sources read, nothing drained.
	prom.waitValue(t, `up{job="lastcall"}`, 1)
	prom.waitValue(t, `min(lastcall_source_up)`, 1)
	prom.waitValue(t, `sum(lastcall_drains_total)`, 0)

	proxy.set(t, spot.URL())
	waitPods(t, ns, func(p []*corev1.Pod) bool { return len(onNode(p, name)) == 1 })

	// After: the queries tell the drain's story.
	prom.waitValue(t, `lastcall_drains_total{result="success"}`, 1)
	// The series existed at 0 before the drain, so rate functions see it.
	prom.waitPositive(t, `increase(lastcall_drains_total{result="success"}[1m])`)
	prom.waitValue(t, `lastcall_evictions_total{code="201"}`, 4)
	prom.waitValue(t, `lastcall_pods_skipped_total{rule="daemonset"}`, 1)
	prom.waitValue(t, `lastcall_notice_to_cordon_seconds_count`, 1)
	prom.waitValue(t, `sum(lastcall_drain_duration_seconds_count{kind="spot-interruption",result="success"})`, 1)
	prom.waitValue(t, `lastcall_drains_in_progress`, 0)
	prom.waitValue(t, `lastcall_drain_deadline_used_ratio`, 0)
	prom.waitValue(t, `sum(lastcall_drains_total{result=~"timeout|failure"})`, 0)
	if v, ok := prom.query(t, `histogram_quantile(0.5, sum by (le) (lastcall_notice_to_cordon_seconds_bucket))`); !ok || v <= 0 || v > 1 {
		t.Errorf("median notice to cordon from Prometheus: %v (present %v), want within (0, 1] s", v, ok)
	}

	// The chart's rules loaded, evaluated without error, and none fires.
	eventually(t, "every alerting rule evaluated", func() bool {
		rules := prom.rules(t)
		if len(rules) != prom.alerts || prom.alerts == 0 {
			t.Fatalf("Prometheus loaded %d rules, want the chart's %d", len(rules), prom.alerts)
		}
		for _, r := range rules {
			if r.Health != "ok" {
				if r.Health == "err" {
					t.Fatalf("rule %s: %s", r.Name, r.LastError)
				}
				return false
			}
		}
		return true
	})
	if v, ok := prom.query(t, `count(ALERTS)`); ok {
		t.Errorf("%v alerts active after a successful drain", v)
	}
}

// waitPositive waits until q yields a value above 0.
func (p *prometheus) waitPositive(t *testing.T, q string) {
	t.Helper()
	eventually(t, q+" > 0", func() bool {
		v, ok := p.query(t, q)
		return ok && v > 0
	})
}

type rule struct {
	Name      string `json:"name"`
	Health    string `json:"health"`
	LastError string `json:"lastError"`
}

func (p *prometheus) rules(t *testing.T) []rule {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/rules")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Groups []struct {
				Rules []rule `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		t.Fatal(err)
	}
	var out []rule
	for _, g := range r.Data.Groups {
		out = append(out, g.Rules...)
	}
	return out
}
