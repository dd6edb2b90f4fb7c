// Package docs_test keeps docs/migrating-from-nth.md complete and true
// against the sources it describes: aws-node-termination-handler's, from the
// Go module cache at the version test/tools/nth pins, and lastcall's own
// flags and chart.
package docs_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"sigs.k8s.io/yaml"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/flagenv"
	"github.com/lastcall/lastcall/test/tools"
)

const (
	// nthModule is aws-node-termination-handler's Go module.
	nthModule = "github.com/aws/aws-node-termination-handler"
	// nthChart is its Helm chart inside the module.
	nthChart = "config/helm/aws-node-termination-handler"
	// migrationDoc is the document under test, from the repository root.
	migrationDoc = "docs/migrating-from-nth.md"
)

// TestMigrationFromNTH checks that the document maps every setting NTH
// reads (environment variables and Helm values) and every metric it
// exports, names nothing NTH lacks, and names only flags, variables and
// chart values lastcall has.
func TestMigrationFromNTH(t *testing.T) {
	root, err := tools.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	src := nthSource(t)
	raw, err := os.ReadFile(filepath.Join(root, migrationDoc))
	if err != nil {
		t.Fatalf("reading the migration guide: %v", err)
	}
	doc := parseDoc(t, string(raw))

	envs := nthEnvVars(t, src)
	values := nthChartValues(t, src)
	metrics := nthMetrics(t, src)
	t.Logf("NTH %s: %d environment variables, %d Helm values, %d metrics", tools.NTH.Version, len(envs), len(values), len(metrics))

	missing := func(what string, want []string, got map[string]bool) {
		t.Helper()
		var miss []string
		for _, w := range want {
			if !got[w] {
				miss = append(miss, w)
			}
		}
		if len(miss) > 0 {
			t.Errorf("%s does not map %d NTH %s: %s", migrationDoc, len(miss), what, strings.Join(miss, ", "))
		}
	}
	unknown := func(what string, got map[string]bool, want []string) {
		t.Helper()
		for _, g := range sortedKeys(got) {
			if !slices.Contains(want, g) {
				t.Errorf("%s maps NTH %s %q, which NTH %s does not have", migrationDoc, what, g, tools.NTH.Version)
			}
		}
	}
	missing("environment variables", envs, doc.envs)
	unknown("environment variable", doc.envs, envs)
	missing("Helm values", values, doc.values)
	unknown("Helm value", doc.values, values)
	missing("metrics", metrics, doc.metrics)
	unknown("metric", doc.metrics, metrics)
	for _, p := range doc.rowProblems {
		t.Error(p)
	}

	if len(doc.flags) == 0 || len(doc.chartValues) == 0 || len(doc.yamlBlocks) == 0 {
		t.Fatalf("%s: found %d flags, %d chart values and %d values blocks: is the guide parsed as written?",
			migrationDoc, len(doc.flags), len(doc.chartValues), len(doc.yamlBlocks))
	}
	flags := lastcallFlags()
	for _, f := range sortedKeys(doc.flags) {
		if _, ok := flags[f]; !ok {
			t.Errorf("%s names the flag --%s, which lastcall does not have", migrationDoc, f)
		}
	}
	byEnv := map[string]string{}
	for f := range flags {
		byEnv[flagenv.EnvName(f)] = f
	}
	for _, e := range sortedKeys(doc.lastcallEnvs) {
		if _, ok := byEnv[e]; !ok {
			t.Errorf("%s names $%s, which backs no lastcall flag", migrationDoc, e)
		}
	}
	schema := lastcallSchema(t, root)
	for _, v := range sortedKeys(doc.chartValues) {
		if _, err := schema.lookup(strings.Split(v, ".")); err != nil {
			t.Errorf("%s names the lastcall chart value %s: %v", migrationDoc, v, err)
		}
	}
	for _, b := range doc.yamlBlocks {
		checkValuesBlock(t, b, schema, src)
	}

	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(readme, []byte("]("+migrationDoc+")")) {
		t.Errorf("README.md does not link %s", migrationDoc)
	}
}

// nthSource returns the directory of NTH's module source, downloading it
// into the module cache through the pinning module test/tools/nth.
func nthSource(t *testing.T) string {
	t.Helper()
	modDir, err := tools.NTH.ModuleDir()
	if err != nil {
		t.Fatal(err)
	}
	pin, err := os.ReadFile(filepath.Join(modDir, "go.mod"))
	if err != nil {
		t.Fatalf("reading NTH's pin: %v", err)
	}
	if !bytes.Contains(pin, []byte(nthModule+" "+tools.NTH.Version)) {
		t.Fatalf("%s/go.mod does not pin %s %s (tools.NTH.Version): keep the two, and %s, in step",
			modDir, nthModule, tools.NTH.Version, migrationDoc)
	}
	cmd := exec.Command("go", "mod", "download", "-json", nthModule+"@"+tools.NTH.Version)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, runErr := cmd.Output()
	var m struct{ Dir, Version, Error string }
	if err := json.Unmarshal(out, &m); err != nil || runErr != nil || m.Error != "" || m.Dir == "" {
		why := m.Error
		if why == "" {
			why = strings.TrimSpace(fmt.Sprintf("%v %s %s", runErr, out, stderr.String()))
		}
		t.Fatalf("cannot get the source of %s@%s from the Go module cache or proxy "+
			"(go mod download -json in %s): %s", nthModule, tools.NTH.Version, modDir, why)
	}
	if m.Version != tools.NTH.Version {
		t.Fatalf("go mod download gave %s %s, want %s", nthModule, m.Version, tools.NTH.Version)
	}
	return m.Dir
}

// nthEnvVars returns every environment variable NTH reads: the keys its
// configuration reads through getEnv, getIntEnv and getBoolEnv
// (pkg/config/config.go), and the variables its chart sets for the AWS SDK
// (the templates' env entries).
func nthEnvVars(t *testing.T, src string) []string {
	t.Helper()
	path := filepath.Join(src, "pkg", "config", "config.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("parsing NTH's configuration: %v", err)
	}
	consts := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, n := range vs.Names {
				if i < len(vs.Values) {
					if lit, ok := vs.Values[i].(*ast.BasicLit); ok && lit.Kind == token.STRING {
						consts[n.Name], _ = strconv.Unquote(lit.Value)
					}
				}
			}
		}
	}
	set := map[string]bool{}
	ast.Inspect(f, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) == 0 {
			return true
		}
		fn, ok := call.Fun.(*ast.Ident)
		if !ok || (fn.Name != "getEnv" && fn.Name != "getIntEnv" && fn.Name != "getBoolEnv") {
			return true
		}
		switch a := call.Args[0].(type) {
		case *ast.Ident: // a constant; the helpers' own parameters are not
			if v, ok := consts[a.Name]; ok {
				set[v] = true
			}
		case *ast.BasicLit:
			v, _ := strconv.Unquote(a.Value)
			set[v] = true
		}
		return true
	})
	if len(set) < 40 {
		t.Fatalf("found only %d variables read in %s: has NTH's configuration changed shape?", len(set), path)
	}
	envName := regexp.MustCompile(`(?m)^\s*- name: ([A-Z][A-Z0-9_]*)\s*$`)
	for _, tpl := range chartTemplates(t, src) {
		for _, m := range envName.FindAllStringSubmatch(tpl, -1) {
			set[m[1]] = true
		}
	}
	return sortedKeys(set)
}

func chartTemplates(t *testing.T, src string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(src, nthChart, "templates", "*"))
	if err != nil || len(files) == 0 {
		t.Fatalf("NTH's chart templates are not in its module (%s): %v", filepath.Join(src, nthChart), err)
	}
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, string(b))
	}
	return out
}

// nthChartValues returns every value of NTH's chart: each key of
// values.yaml, and within a map the keys the templates read one by one
// (image.repository, probes.httpGet.port), while a map the templates take
// whole (an affinity, an update strategy) is one value; and any value the
// templates read that values.yaml does not list.
func nthChartValues(t *testing.T, src string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(src, nthChart, "values.yaml"))
	if err != nil {
		t.Fatalf("NTH's chart values are not in its module: %v", err)
	}
	var values map[string]any
	if err := yaml.Unmarshal(b, &values); err != nil {
		t.Fatalf("reading NTH's values.yaml: %v", err)
	}
	ref := regexp.MustCompile(`\.Values\.([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)*)`)
	refs := map[string]bool{}
	for _, tpl := range chartTemplates(t, src) {
		for _, m := range ref.FindAllStringSubmatch(tpl, -1) {
			refs[m[1]] = true
		}
	}
	readBelow := func(path string) bool {
		for r := range refs {
			if strings.HasPrefix(r, path+".") {
				return true
			}
		}
		return false
	}
	set := map[string]bool{}
	var walk func(prefix string, m map[string]any)
	walk = func(prefix string, m map[string]any) {
		for k, v := range m {
			p := prefix + k
			if sub, ok := v.(map[string]any); ok && len(sub) > 0 && readBelow(p) {
				walk(p+".", sub)
				continue
			}
			set[p] = true
		}
	}
	walk("", values)
	for r := range refs {
		if !set[r] && !readBelow(r) {
			set[r] = true
		}
	}
	if len(set) < 80 {
		t.Fatalf("found only %d values in NTH's chart: has it changed shape?", len(set))
	}
	return sortedKeys(set)
}

var (
	instrument      = regexp.MustCompile(`^(Int64|Float64)(Counter|UpDownCounter|Gauge|Histogram)$`)
	notInMetricName = regexp.MustCompile(`[^A-Za-z0-9_:]`)
)

// nthMetrics returns the Prometheus names of the metrics NTH registers
// (pkg/observability/opentelemetry.go), as OpenTelemetry's Prometheus
// exporter writes them: dots become underscores, counters end in _total.
func nthMetrics(t *testing.T, src string) []string {
	t.Helper()
	path := filepath.Join(src, "pkg", "observability", "opentelemetry.go")
	f, err := parser.ParseFile(token.NewFileSet(), path, nil, 0)
	if err != nil {
		t.Fatalf("parsing NTH's metrics: %v", err)
	}
	var names []string
	var current string // the last string assigned to a variable, as NTH names each metric in "name"
	ast.Inspect(f, func(n ast.Node) bool {
		switch x := n.(type) {
		case *ast.AssignStmt:
			if len(x.Rhs) == 1 {
				if lit, ok := x.Rhs[0].(*ast.BasicLit); ok && lit.Kind == token.STRING {
					current, _ = strconv.Unquote(lit.Value)
				}
			}
		case *ast.CallExpr:
			sel, ok := x.Fun.(*ast.SelectorExpr)
			if !ok || len(x.Args) == 0 || !instrument.MatchString(sel.Sel.Name) {
				return true
			}
			name := current
			if lit, ok := x.Args[0].(*ast.BasicLit); ok {
				name, _ = strconv.Unquote(lit.Value)
			}
			name = notInMetricName.ReplaceAllString(name, "_")
			switch {
			case strings.HasSuffix(sel.Sel.Name, "UpDownCounter"), strings.HasSuffix(sel.Sel.Name, "Gauge"):
			case strings.HasSuffix(sel.Sel.Name, "Counter"):
				name += "_total"
			default:
				t.Fatalf("NTH registers a %s (%s): teach nthMetrics its Prometheus name", sel.Sel.Name, name)
			}
			names = append(names, name)
		}
		return true
	})
	if len(names) == 0 {
		t.Fatalf("found no metrics in %s: has NTH's observability changed shape?", path)
	}
	sort.Strings(names)
	return slices.Compact(names)
}

// doc is what the migration guide names.
type doc struct {
	envs, values, metrics map[string]bool // NTH's, from the mapping tables' first columns
	flags                 map[string]bool // lastcall flags, without the dashes
	lastcallEnvs          map[string]bool // LASTCALL_* variables
	chartValues           map[string]bool // lastcall chart values ("chart `x`")
	yamlBlocks            []yamlBlock
	rowProblems           []string
}

type yamlBlock struct {
	line int
	text string
}

var (
	codeSpan = regexp.MustCompile("`([^`]+)`")
	// flagName is a lastcall flag in a code span or a values block.
	flagName = regexp.MustCompile(`(?:^|[\s"'\[(])--([a-z][a-z0-9-]*)`)
	envName  = regexp.MustCompile(`\bLASTCALL_[A-Z0-9_]+\b`)
	// chartRef is "chart `a`", "chart `a`, `b`" or "chart `a` or `b`".
	chartRef = regexp.MustCompile("\\bchart\\s+((?:`[^`]+`(?:,\\s+|\\s+or\\s+|\\s+and\\s+)?)+)")
	noMap    = regexp.MustCompile(`(?i)\b(not needed|no equivalent)\b`)
)

// parseDoc reads the guide's tables, code spans and code blocks. A
// settings table's header starts with "NTH variable" (columns: NTH
// variable, NTH chart value, lastcall, notes); a metrics table's with "NTH
// metric" (NTH metric, lastcall, notes).
func parseDoc(t *testing.T, text string) doc {
	t.Helper()
	d := doc{envs: map[string]bool{}, values: map[string]bool{}, metrics: map[string]bool{},
		flags: map[string]bool{}, lastcallEnvs: map[string]bool{}, chartValues: map[string]bool{}}
	lines := strings.Split(text, "\n")
	var fence string // the open fence's info string; "" outside
	var block, prose []string
	blockStart := 0
	table := "" // "settings", "metrics" or "" (another table, or none)
	columns := 0
	for i, line := range lines {
		n := i + 1
		if trimmed := strings.TrimSpace(line); strings.HasPrefix(trimmed, "```") { // a fence, indented in a list or not
			if fence == "" {
				fence, block, blockStart = strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))+" ", nil, n
				continue
			}
			if strings.HasPrefix(fence, "yaml ") {
				d.yamlBlocks = append(d.yamlBlocks, yamlBlock{blockStart, strings.Join(block, "\n")})
				for _, m := range flagName.FindAllStringSubmatch(strings.Join(block, "\n"), -1) {
					d.flags[m[1]] = true
				}
			}
			fence = ""
			continue
		}
		if fence != "" {
			block = append(block, line)
			if strings.HasPrefix(fence, "sh ") && strings.HasPrefix(strings.TrimSpace(line), "lastcall ") {
				for _, m := range flagName.FindAllStringSubmatch(line, -1) {
					d.flags[m[1]] = true
				}
			}
			for _, e := range envName.FindAllString(line, -1) {
				d.lastcallEnvs[e] = true
			}
			continue
		}
		prose = append(prose, line)

		if !strings.HasPrefix(line, "|") {
			table = ""
			continue
		}
		cells := splitRow(line)
		if table == "" && !strings.HasPrefix(strings.TrimSpace(line), "| -") {
			switch {
			case len(cells) > 0 && cells[0] == "NTH variable":
				table, columns = "settings", 4
			case len(cells) > 0 && cells[0] == "NTH metric":
				table, columns = "metrics", 3
			default:
				table = "other"
			}
			if table != "other" && len(cells) != columns {
				t.Fatalf("%s:%d: a %s table has %d columns, want %d", migrationDoc, n, table, len(cells), columns)
			}
			continue
		}
		if table == "other" || strings.HasPrefix(strings.TrimSpace(line), "| -") {
			continue
		}
		if len(cells) != columns {
			d.rowProblems = append(d.rowProblems, fmt.Sprintf("%s:%d: %d cells, want %d (a | inside a cell?)", migrationDoc, n, len(cells), columns))
			continue
		}
		spans := func(cell string) []string {
			var out []string
			for _, m := range codeSpan.FindAllStringSubmatch(cell, -1) {
				out = append(out, m[1])
			}
			return out
		}
		lastcall, notes := cells[columns-2], cells[columns-1]
		switch table {
		case "settings":
			for _, s := range spans(cells[0]) {
				d.envs[s] = true
			}
			for _, s := range spans(cells[1]) {
				d.values[s] = true
			}
			if len(spans(cells[0])) == 0 && len(spans(cells[1])) == 0 {
				d.rowProblems = append(d.rowProblems, fmt.Sprintf("%s:%d: a row names no NTH setting", migrationDoc, n))
			}
		case "metrics":
			for _, s := range spans(cells[0]) {
				d.metrics[s] = true
			}
		}
		switch {
		case strings.TrimSpace(lastcall) == "":
			d.rowProblems = append(d.rowProblems, fmt.Sprintf("%s:%d: no lastcall equivalent given, nor \"not needed\" or \"no equivalent\"", migrationDoc, n))
		case noMap.MatchString(lastcall) && strings.TrimSpace(notes) == "":
			d.rowProblems = append(d.rowProblems, fmt.Sprintf("%s:%d: %q without a reason in the notes", migrationDoc, n, strings.TrimSpace(lastcall)))
		case !noMap.MatchString(lastcall) && len(spans(lastcall)) == 0:
			d.rowProblems = append(d.rowProblems, fmt.Sprintf("%s:%d: the lastcall column names neither a flag, variable or value nor says \"not needed\" or \"no equivalent\"", migrationDoc, n))
		}
	}
	if fence != "" {
		t.Fatalf("%s: a code block opened at line %d is never closed", migrationDoc, blockStart)
	}
	// Outside code blocks, a code span or a "chart `x`" may run over a
	// line break.
	text = strings.Join(prose, "\n")
	for _, e := range envName.FindAllString(text, -1) {
		d.lastcallEnvs[e] = true
	}
	for _, m := range codeSpan.FindAllStringSubmatch(text, -1) {
		for _, f := range flagName.FindAllStringSubmatch(m[1], -1) {
			d.flags[f[1]] = true
		}
	}
	for _, m := range chartRef.FindAllStringSubmatch(text, -1) {
		for _, v := range codeSpan.FindAllStringSubmatch(m[1], -1) {
			name, _, _ := strings.Cut(v[1], ":")
			d.chartValues[strings.TrimSpace(name)] = true
		}
	}
	return d
}

// splitRow splits a table row into its trimmed cells.
func splitRow(line string) []string {
	line = strings.TrimSpace(line)
	line = strings.TrimSuffix(strings.TrimPrefix(line, "|"), "|")
	cells := strings.Split(line, "|")
	for i := range cells {
		cells[i] = strings.TrimSpace(cells[i])
	}
	return cells
}

// lastcallFlags returns every flag lastcall declares, as pkg/app does.
func lastcallFlags() map[string]*pflag.Flag {
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	app.NewOptions(app.Providers()...).AddFlags(fs)
	out := map[string]*pflag.Flag{}
	fs.VisitAll(func(f *pflag.Flag) { out[f.Name] = f })
	return out
}

// schema is lastcall's values.schema.json.
type schema struct{ root map[string]any }

func lastcallSchema(t *testing.T, root string) schema {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "charts", "lastcall", "values.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var s schema
	if err := json.Unmarshal(b, &s.root); err != nil {
		t.Fatalf("reading the chart's schema: %v", err)
	}
	return s
}

// resolve follows a local $ref.
func (s schema) resolve(node map[string]any) map[string]any {
	for {
		ref, ok := node["$ref"].(string)
		if !ok {
			return node
		}
		node = s.root
		for _, seg := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
			node, _ = node[seg].(map[string]any)
		}
	}
}

// lookup returns the schema of the value at path, or an error if the chart
// has no such value.
func (s schema) lookup(path []string) (map[string]any, error) {
	node := s.root
	for i, seg := range path {
		node = s.resolve(node)
		if props, ok := node["properties"].(map[string]any); ok {
			if next, ok := props[seg].(map[string]any); ok {
				node = next
				continue
			}
		}
		if pats, ok := node["patternProperties"].(map[string]any); ok {
			found := false
			for p, next := range pats {
				if regexp.MustCompile(p).MatchString(seg) {
					node, found = next.(map[string]any), true
					break
				}
			}
			if found {
				continue
			}
		}
		switch ap := node["additionalProperties"].(type) {
		case map[string]any:
			node = ap
			continue
		case bool:
			if !ap {
				return nil, fmt.Errorf("the chart has no value %s (values.schema.json)", strings.Join(path[:i+1], "."))
			}
		}
		return map[string]any{}, nil // a free-form object: any key
	}
	return s.resolve(node), nil
}

// checkValuesBlock checks a yaml block of Helm values. Its first line
// names its chart: "# lastcall ..." is checked key by key against
// lastcall's schema, "# aws-node-termination-handler ..." against the keys
// of NTH's values.yaml.
func checkValuesBlock(t *testing.T, b yamlBlock, s schema, nthSrc string) {
	t.Helper()
	first, _, _ := strings.Cut(b.text, "\n")
	var values map[string]any
	if err := yaml.Unmarshal([]byte(b.text), &values); err != nil {
		t.Errorf("%s:%d: the yaml block does not parse: %v", migrationDoc, b.line, err)
		return
	}
	switch {
	case strings.HasPrefix(first, "# lastcall"):
		var walk func(path []string, m map[string]any)
		walk = func(path []string, m map[string]any) {
			for k, v := range m {
				p := append(slices.Clone(path), k)
				node, err := s.lookup(p)
				if err != nil {
					t.Errorf("%s:%d: %v", migrationDoc, b.line, err)
					continue
				}
				_, structured := node["properties"]
				_, patterned := node["patternProperties"]
				if sub, ok := v.(map[string]any); ok && (structured || patterned) {
					walk(p, sub)
				}
			}
		}
		walk(nil, values)
	case strings.HasPrefix(first, "# aws-node-termination-handler"):
		raw, err := os.ReadFile(filepath.Join(nthSrc, nthChart, "values.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		var nth map[string]any
		if err := yaml.Unmarshal(raw, &nth); err != nil {
			t.Fatal(err)
		}
		for k := range values {
			if _, ok := nth[k]; !ok {
				t.Errorf("%s:%d: NTH's chart has no value %s", migrationDoc, b.line, k)
			}
		}
	default:
		t.Errorf("%s:%d: a yaml block's first line must name its chart (# lastcall ..., # aws-node-termination-handler ...)", migrationDoc, b.line)
	}
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
