package chart_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/lastcall/lastcall/pkg/app"
)

// The files under test, relative to this package's directory.
const (
	dashboardFile = "../../charts/lastcall/files/dashboard.json"
	rulesFile     = "../../charts/lastcall/templates/prometheusrule.yaml"
)

// TestAlertAndDashboardMetricsExist fails when the dashboard or an alert
// queries a metric that no component of lastcall registers: a typo, or a
// metric renamed in code and not in the chart, shows nothing and never fires.
func TestAlertAndDashboardMetricsExist(t *testing.T) {
	exposed := exposedMetrics(t)

	var refs []reference
	dash := readDashboard(t)
	fromDashboard := dash.references()
	fromRules := ruleReferences(t)
	refs = append(refs, fromDashboard...)
	refs = append(refs, fromRules...)

	for _, r := range refs {
		if !exposed.has(r.metric) {
			t.Errorf("%s: %s is not exposed by lastcall", r.where, r.metric)
		}
	}

	// Guard against a parser that silently finds nothing.
	for _, c := range []struct {
		file string
		refs []reference
		min  int
	}{
		{"dashboard.json", fromDashboard, 10},
		{"prometheusrule.yaml", fromRules, 7},
	} {
		if n := len(distinct(c.refs)); n < c.min {
			t.Errorf("%s references %d distinct metrics, want at least %d: %v", c.file, n, c.min, distinct(c.refs))
		}
	}
}

// TestDashboardIsValid checks the dashboard's structure: what Grafana needs
// to load it, and what the chart promises (every query on the ${datasource}
// variable, filtered by the namespace and pod variables).
func TestDashboardIsValid(t *testing.T) {
	d := readDashboard(t)
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q, title %q: both must be set", d.UID, d.Title)
	}
	vars := map[string]string{}
	for _, v := range d.Templating.List {
		vars[v.Name] = v.Type
	}
	for name, typ := range map[string]string{"datasource": "datasource", "cluster": "query", "namespace": "query", "pod": "query"} {
		if vars[name] != typ {
			t.Errorf("template variable %q has type %q, want %q", name, vars[name], typ)
		}
	}

	ids := map[int]string{}
	panels := 0
	for p := range d.panels() {
		if p.ID == 0 {
			t.Errorf("panel %q has no id", p.Title)
		} else if other, dup := ids[p.ID]; dup {
			t.Errorf("panels %q and %q share id %d", other, p.Title, p.ID)
		}
		ids[p.ID] = p.Title
		if p.GridPos == nil || p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v is not a box within 24 columns", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		panels++
		if !p.Datasource.isVariable() {
			t.Errorf("panel %q: datasource %s, want uid ${datasource}", p.Title, p.Datasource)
		}
		exprs := 0
		for _, tg := range p.Targets {
			if strings.TrimSpace(tg.Expr) == "" {
				t.Errorf("panel %q: target %s has no expr", p.Title, tg.RefID)
				continue
			}
			exprs++
			if tg.Datasource != nil && !tg.Datasource.isVariable() {
				t.Errorf("panel %q target %s: datasource %s, want uid ${datasource}", p.Title, tg.RefID, tg.Datasource)
			}
			for _, f := range []string{`cluster=~"$cluster"`, `namespace=~"$namespace"`, `pod=~"$pod"`} {
				if strings.Count(tg.Expr, f) < len(metricRE.FindAllString(tg.Expr, -1)) {
					t.Errorf("panel %q target %s: not every selector filters %s: %s", p.Title, tg.RefID, f, tg.Expr)
				}
			}
		}
		if exprs == 0 {
			t.Errorf("panel %q has no target with an expr", p.Title)
		}
	}
	if panels == 0 {
		t.Error("the dashboard has no panels")
	}
	if d.Editable {
		t.Error("the dashboard is editable: an edit made in Grafana is lost at the next install; copy it instead")
	}
	// What an on-call engineer asks after an interruption, each on a panel.
	exprs := ""
	for p := range d.panels() {
		for _, tg := range p.Targets {
			exprs += tg.Expr + "\n"
		}
	}
	for _, want := range []string{"lastcall_pdb_overrides_total", "lastcall_pods_remaining_at_deadline_total", `reason="redrive"`, "sum by (node)"} {
		if !strings.Contains(exprs, want) {
			t.Errorf("no panel shows %s", want)
		}
	}
}

// metricSet is every metric name lastcall registers, and which of them are
// histograms or summaries (exposed with _bucket, _sum and _count series).
type metricSet struct {
	names      map[string]bool
	histograms map[string]bool
}

func (s metricSet) has(name string) bool {
	if s.names[name] {
		return true
	}
	for _, suffix := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suffix); ok && s.histograms[base] {
			return true
		}
	}
	return false
}

// exposedMetrics wires each mode as lastcall does (app.Metrics), without
// running it, and records every metric its components register.
func exposedMetrics(t *testing.T) metricSet {
	t.Helper()
	set := metricSet{names: map[string]bool{}, histograms: map[string]bool{}}
	for mode, args := range map[string][]string{
		"agent":        {"--node-name=node-a", "--cloud=aws"},
		"queue":        {"--mode=queue", "--queue-url=https://sqs.us-east-1.amazonaws.com/1/q", "--region=us-east-1", "--pod-name=p", "--pod-namespace=ns"},
		"drainability": {"--mode=drainability", "--cloud=aws"},
	} {
		o, err := app.Parse(args, func(string) (string, bool) { return "", false }, io.Discard)
		if err != nil {
			t.Fatalf("%s mode: %v", mode, err)
		}
		rec := &recorder{t: t, mode: mode, reg: prometheus.NewRegistry(), set: set}
		if err := app.Metrics(context.Background(), o, app.Env{Client: fake.NewClientset()}, rec); err != nil {
			t.Fatalf("%s mode: %v", mode, err)
		}
		// Histograms and summaries inside collectors (the Go collector's)
		// show their type once gathered.
		mfs, err := rec.reg.Gather()
		if err != nil {
			t.Errorf("%s mode: gathering: %v", mode, err)
		}
		for _, mf := range mfs {
			switch mf.GetType() {
			case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM, dto.MetricType_SUMMARY:
				set.histograms[mf.GetName()] = true
			}
		}
	}
	if len(set.names) < 20 {
		t.Fatalf("only %d metrics recorded: %v", len(set.names), slices.Sorted(maps.Keys(set.names)))
	}
	return set
}

// recorder is a prometheus.Registerer that records the name of every metric
// registered through it, and registers it on a real registry too so that
// duplicates fail as they would in lastcall.
type recorder struct {
	t    *testing.T
	mode string
	reg  *prometheus.Registry
	set  metricSet
}

var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (r *recorder) Register(c prometheus.Collector) error {
	if err := r.reg.Register(c); err != nil {
		return err
	}
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	histogram := false
	switch c.(type) {
	case prometheus.Histogram, *prometheus.HistogramVec, prometheus.Summary, *prometheus.SummaryVec:
		histogram = true
	}
	for d := range ch {
		m := fqNameRE.FindStringSubmatch(d.String())
		if m == nil {
			r.t.Errorf("%s mode: no fqName in %s", r.mode, d)
			continue
		}
		r.set.names[m[1]] = true
		if histogram {
			r.set.histograms[m[1]] = true
		}
	}
	return nil
}

func (r *recorder) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := r.Register(c); err != nil {
			r.t.Errorf("%s mode: registering: %v", r.mode, err)
		}
	}
}

func (r *recorder) Unregister(c prometheus.Collector) bool { return r.reg.Unregister(c) }

// metricRE matches the metric names lastcall's dashboards and alerts use.
var metricRE = regexp.MustCompile(`\b(?:lastcall|process|go)_[a-zA-Z0-9_]+\b`)

// reference is a metric named in a query, and where.
type reference struct {
	where, metric string
}

func referencesIn(where, expr string) []reference {
	var refs []reference
	for _, m := range metricRE.FindAllString(expr, -1) {
		refs = append(refs, reference{where: where, metric: m})
	}
	return refs
}

func distinct(refs []reference) []string {
	var names []string
	for _, r := range refs {
		names = append(names, r.metric)
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// dashboard is the part of Grafana's dashboard model the tests read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Editable   bool    `json:"editable"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name  string          `json:"name"`
			Type  string          `json:"type"`
			Query json.RawMessage `json:"query"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int            `json:"id"`
	Type       string         `json:"type"`
	Title      string         `json:"title"`
	Datasource *datasourceRef `json:"datasource"`
	GridPos    *struct {
		H, W, X, Y int
	} `json:"gridPos"`
	Targets []struct {
		RefID      string         `json:"refId"`
		Expr       string         `json:"expr"`
		Datasource *datasourceRef `json:"datasource"`
	} `json:"targets"`
	// Panels are a collapsed row's.
	Panels []panel `json:"panels"`
}

type datasourceRef struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

func (d *datasourceRef) isVariable() bool { return d != nil && d.UID == "${datasource}" }

func (d *datasourceRef) String() string {
	if d == nil {
		return "none"
	}
	return fmt.Sprintf("{type %q, uid %q}", d.Type, d.UID)
}

func readDashboard(t *testing.T) *dashboard {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	var d dashboard
	if err := dec.Decode(&d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	if dec.More() {
		t.Fatalf("%s: data after the dashboard", dashboardFile)
	}
	return &d
}

// panels yields every panel, rows' nested panels included.
func (d *dashboard) panels() func(yield func(panel) bool) {
	var walk func(ps []panel, yield func(panel) bool) bool
	walk = func(ps []panel, yield func(panel) bool) bool {
		for _, p := range ps {
			if !yield(p) || !walk(p.Panels, yield) {
				return false
			}
		}
		return true
	}
	return func(yield func(panel) bool) { walk(d.Panels, yield) }
}

// references are the metrics the dashboard's panels and query variables
// use.
func (d *dashboard) references() []reference {
	var refs []reference
	for p := range d.panels() {
		for _, tg := range p.Targets {
			refs = append(refs, referencesIn(fmt.Sprintf("dashboard.json panel %q", p.Title), tg.Expr)...)
		}
	}
	for _, v := range d.Templating.List {
		if v.Type != "query" {
			continue
		}
		// A query variable's query is a string or {"query": "..."}.
		var q string
		if json.Unmarshal(v.Query, &q) != nil {
			var obj struct{ Query string }
			_ = json.Unmarshal(v.Query, &obj)
			q = obj.Query
		}
		refs = append(refs, referencesIn(fmt.Sprintf("dashboard.json variable %q", v.Name), q)...)
	}
	return refs
}

var (
	alertRE = regexp.MustCompile(`^\s*-\s*alert:\s*(\S+)`)
	exprRE  = regexp.MustCompile(`^(\s*)expr:\s*(.*)$`)
)

// ruleReferences reads the PrometheusRule template as text (it is a Helm
// template, not YAML) and returns the metrics of every expr, a block
// scalar's following lines included.
func ruleReferences(t *testing.T) []reference {
	t.Helper()
	f, err := os.Open(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var refs []reference
	alert := "(no alert)"
	blockIndent := -1 // inside a block scalar expr: the expr key's indent
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		where := "prometheusrule.yaml alert " + alert
		if blockIndent >= 0 {
			trimmed := strings.TrimLeft(line, " ")
			if trimmed == "" || len(line)-len(trimmed) > blockIndent {
				refs = append(refs, referencesIn(where, line)...)
				continue
			}
			blockIndent = -1
		}
		if m := alertRE.FindStringSubmatch(line); m != nil {
			alert = m[1]
			continue
		}
		if m := exprRE.FindStringSubmatch(line); m != nil {
			if v := strings.TrimSpace(m[2]); v != "" && strings.ContainsAny(v[:1], "|>") {
				blockIndent = len(m[1])
				continue
			}
			refs = append(refs, referencesIn(where, m[2])...)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return refs
}
