package notify

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"text/template/parse"
	"time"
)

// Template is a Go template over a Notification: text/template's syntax
// (parsed by text/template/parse), executed here without reflection.
// text/template's executor calls reflect.Value.MethodByName, which makes
// the linker keep every exported method of every type in the binary: 52 MB
// more for lastcall, and its idle memory with it. This one knows the few
// types a Notification holds, so it needs none of that.
//
// It has text/template's actions (output, if/else if/else, with, define,
// template, comments, whitespace trimming) and functions (eq, ne, lt, le,
// gt, ge, not, and, or, len, print, printf), plus json, include and
// duration. Fields are Notification's; a time.Time has IsZero, UTC, Unix,
// Format, After, Before, Sub and String; a time.Duration has Seconds,
// Milliseconds and String. range and variables other than $ are refused
// at parse time: a Notification has nothing to range over.
type Template struct {
	name  string
	trees map[string]*parse.Tree
}

// funcNames are the functions a template may call, for the parser.
var funcNames = map[string]any{
	"eq": true, "ne": true, "lt": true, "le": true, "gt": true, "ge": true,
	"not": true, "and": true, "or": true, "len": true, "print": true, "printf": true,
	"json": true, "include": true, "duration": true,
}

// parseTemplate parses text, named name, and refuses what Exec cannot run.
func parseTemplate(name, text string) (*Template, error) {
	trees, err := parse.Parse(name, text, "", "", funcNames)
	if err != nil {
		return nil, err
	}
	if trees[name] == nil {
		trees[name] = &parse.Tree{Name: name, Root: &parse.ListNode{}}
	}
	for _, tr := range trees {
		if tr.Root == nil {
			continue
		}
		if err := check(tr, tr.Root); err != nil {
			return nil, err
		}
	}
	return &Template{name: name, trees: trees}, nil
}

// check refuses range and variables other than $.
func check(tr *parse.Tree, n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := check(tr, c); err != nil {
				return err
			}
		}
	case *parse.RangeNode:
		loc, _ := tr.ErrorContext(n)
		return fmt.Errorf("%s: range is not supported: a notification has nothing to range over", loc)
	case *parse.ActionNode:
		return checkPipe(tr, n.Pipe)
	case *parse.IfNode:
		return checkBranch(tr, &n.BranchNode)
	case *parse.WithNode:
		return checkBranch(tr, &n.BranchNode)
	case *parse.TemplateNode:
		if n.Pipe != nil {
			return checkPipe(tr, n.Pipe)
		}
	case *parse.BreakNode, *parse.ContinueNode:
		loc, _ := tr.ErrorContext(n)
		return fmt.Errorf("%s: break and continue are not supported", loc)
	}
	return nil
}

func checkBranch(tr *parse.Tree, b *parse.BranchNode) error {
	if err := checkPipe(tr, b.Pipe); err != nil {
		return err
	}
	if err := check(tr, b.List); err != nil {
		return err
	}
	if b.ElseList != nil {
		return check(tr, b.ElseList)
	}
	return nil
}

func checkPipe(tr *parse.Tree, p *parse.PipeNode) error {
	if p == nil {
		return nil
	}
	if len(p.Decl) > 0 {
		loc, _ := tr.ErrorContext(p)
		return fmt.Errorf("%s: variables are not supported", loc)
	}
	for _, c := range p.Cmds {
		for _, a := range c.Args {
			if v, ok := a.(*parse.VariableNode); ok && v.Ident[0] != "$" {
				loc, _ := tr.ErrorContext(a)
				return fmt.Errorf("%s: variable %s is not supported (only $)", loc, v.Ident[0])
			}
			if p, ok := a.(*parse.PipeNode); ok {
				if err := checkPipe(tr, p); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Execute writes the template applied to m to w.
func (t *Template) Execute(w io.Writer, m Notification) error {
	return t.ExecuteTemplate(w, t.name, m)
}

// ExecuteTemplate writes the named template (the file, or a define)
// applied to data.
func (t *Template) ExecuteTemplate(w io.Writer, name string, data any) error {
	tr := t.trees[name]
	if tr == nil {
		return fmt.Errorf("no template %q", name)
	}
	s := &state{t: t, tr: tr, w: w, root: data}
	return s.walk(data, tr.Root)
}

type state struct {
	t     *Template
	tr    *parse.Tree
	w     io.Writer
	root  any
	depth int
}

// maxDepth bounds template recursion (a define including itself).
const maxDepth = 100

func (s *state) errorf(n parse.Node, format string, args ...any) error {
	loc, _ := s.tr.ErrorContext(n)
	return fmt.Errorf("template %s: %s: %s", s.tr.ParseName, loc, fmt.Sprintf(format, args...))
}

func (s *state) walk(dot any, n parse.Node) error {
	switch n := n.(type) {
	case *parse.ListNode:
		if n == nil {
			return nil
		}
		for _, c := range n.Nodes {
			if err := s.walk(dot, c); err != nil {
				return err
			}
		}
	case *parse.TextNode:
		_, err := s.w.Write(n.Text)
		return err
	case *parse.CommentNode:
	case *parse.ActionNode:
		v, err := s.pipe(dot, n.Pipe)
		if err != nil {
			return err
		}
		_, err = fmt.Fprint(s.w, printable(v))
		return err
	case *parse.IfNode:
		v, err := s.pipe(dot, n.Pipe)
		if err != nil {
			return err
		}
		if truth(v) {
			return s.walk(dot, n.List)
		}
		if n.ElseList != nil {
			return s.walk(dot, n.ElseList)
		}
	case *parse.WithNode:
		v, err := s.pipe(dot, n.Pipe)
		if err != nil {
			return err
		}
		if truth(v) {
			return s.walk(v, n.List)
		}
		if n.ElseList != nil {
			return s.walk(dot, n.ElseList)
		}
	case *parse.TemplateNode:
		var data any
		if n.Pipe != nil {
			v, err := s.pipe(dot, n.Pipe)
			if err != nil {
				return err
			}
			data = v
		}
		return s.include(n, n.Name, data, s.w)
	default:
		return s.errorf(n, "unsupported %T", n)
	}
	return nil
}

func (s *state) include(n parse.Node, name string, data any, w io.Writer) error {
	tr := s.t.trees[name]
	if tr == nil {
		return s.errorf(n, "no template %q", name)
	}
	if s.depth >= maxDepth {
		return s.errorf(n, "templates nested deeper than %d", maxDepth)
	}
	sub := &state{t: s.t, tr: tr, w: w, root: data, depth: s.depth + 1}
	return sub.walk(data, tr.Root)
}

func (s *state) pipe(dot any, p *parse.PipeNode) (any, error) {
	var v any
	for i, c := range p.Cmds {
		var final []any
		if i > 0 {
			final = []any{v}
		}
		r, err := s.command(dot, c, final)
		if err != nil {
			return nil, err
		}
		v = r
	}
	return v, nil
}

func (s *state) command(dot any, c *parse.CommandNode, final []any) (any, error) {
	args := func() ([]any, error) {
		out := make([]any, 0, len(c.Args))
		for _, a := range c.Args[1:] {
			v, err := s.arg(dot, a)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return append(out, final...), nil
	}
	switch n := c.Args[0].(type) {
	case *parse.FieldNode:
		a, err := args()
		if err != nil {
			return nil, err
		}
		return s.fields(n, dot, n.Ident, a)
	case *parse.ChainNode:
		a, err := args()
		if err != nil {
			return nil, err
		}
		base, err := s.arg(dot, n.Node)
		if err != nil {
			return nil, err
		}
		return s.fields(n, base, n.Field, a)
	case *parse.VariableNode: // $ or $.Field
		a, err := args()
		if err != nil {
			return nil, err
		}
		if len(n.Ident) == 1 {
			return s.noArgs(n, s.root, a)
		}
		return s.fields(n, s.root, n.Ident[1:], a)
	case *parse.IdentifierNode:
		a, err := args()
		if err != nil {
			return nil, err
		}
		return s.call(n, n.Ident, a)
	}
	if len(c.Args) > 1 || len(final) > 0 {
		return nil, s.errorf(c, "%s is not a function; it takes no arguments", c.Args[0])
	}
	return s.arg(dot, c.Args[0])
}

func (s *state) noArgs(n parse.Node, v any, args []any) (any, error) {
	if len(args) > 0 {
		return nil, s.errorf(n, "%s takes no arguments", n)
	}
	return v, nil
}

// arg evaluates one argument.
func (s *state) arg(dot any, n parse.Node) (any, error) {
	switch n := n.(type) {
	case *parse.DotNode:
		return dot, nil
	case *parse.NilNode:
		return nil, nil
	case *parse.BoolNode:
		return n.True, nil
	case *parse.StringNode:
		return n.Text, nil
	case *parse.NumberNode:
		switch {
		case n.IsInt:
			return n.Int64, nil
		case n.IsFloat:
			return n.Float64, nil
		}
		return nil, s.errorf(n, "number %s is not supported", n.Text)
	case *parse.FieldNode:
		return s.fields(n, dot, n.Ident, nil)
	case *parse.ChainNode:
		base, err := s.arg(dot, n.Node)
		if err != nil {
			return nil, err
		}
		return s.fields(n, base, n.Field, nil)
	case *parse.VariableNode:
		if len(n.Ident) == 1 {
			return s.root, nil
		}
		return s.fields(n, s.root, n.Ident[1:], nil)
	case *parse.PipeNode:
		return s.pipe(dot, n)
	case *parse.IdentifierNode:
		return s.call(n, n.Ident, nil)
	}
	return nil, s.errorf(n, "unsupported argument %s", n)
}

// fields follows a chain of field and method names from v; args go to
// the last one, which must then be a method.
func (s *state) fields(n parse.Node, v any, names []string, args []any) (any, error) {
	for i, name := range names {
		var a []any
		if i == len(names)-1 {
			a = args
		}
		r, err := member(v, name, a)
		if err != nil {
			return nil, s.errorf(n, "%v", err)
		}
		v = r
	}
	return v, nil
}

// member is v's field or method name, called with args.
func member(v any, name string, args []any) (any, error) {
	noArgs := func(r any) (any, error) {
		if len(args) > 0 {
			return nil, fmt.Errorf("%s takes no arguments", name)
		}
		return r, nil
	}
	switch v := v.(type) {
	case Notification:
		switch name {
		case "Phase":
			return noArgs(string(v.Phase))
		case "Node":
			return noArgs(v.Node)
		case "Instance":
			return noArgs(v.Instance)
		case "Kind":
			return noArgs(v.Kind)
		case "Action":
			return noArgs(v.Action)
		case "Source":
			return noArgs(v.Source)
		case "Detail":
			return noArgs(v.Detail)
		case "Deadline":
			return noArgs(v.Deadline)
		case "Result":
			return noArgs(v.Result)
		case "Evicted":
			return noArgs(v.Evicted)
		case "Remaining":
			return noArgs(v.Remaining)
		case "Took":
			return noArgs(v.Took)
		case "Time":
			return noArgs(v.Time)
		case "Mode":
			return noArgs(v.Mode)
		case "Cluster":
			return noArgs(v.Cluster)
		case "Key":
			return noArgs(v.Key())
		}
	case time.Time:
		switch name {
		case "IsZero":
			return noArgs(v.IsZero())
		case "UTC":
			return noArgs(v.UTC())
		case "Unix":
			return noArgs(v.Unix())
		case "String":
			return noArgs(v.String())
		case "Format":
			layout, err := oneArg[string](name, args)
			if err != nil {
				return nil, err
			}
			return v.Format(layout), nil
		case "After", "Before", "Sub":
			u, err := oneArg[time.Time](name, args)
			if err != nil {
				return nil, err
			}
			switch name {
			case "After":
				return v.After(u), nil
			case "Before":
				return v.Before(u), nil
			}
			return v.Sub(u), nil
		}
	case time.Duration:
		switch name {
		case "Seconds":
			return noArgs(v.Seconds())
		case "Milliseconds":
			return noArgs(v.Milliseconds())
		case "String":
			return noArgs(v.String())
		}
	case nil:
		return nil, fmt.Errorf("nil has no field %s", name)
	}
	return nil, fmt.Errorf("%T has no field or method %s", v, name)
}

func oneArg[T any](name string, args []any) (T, error) {
	var zero T
	if len(args) != 1 {
		return zero, fmt.Errorf("%s takes 1 argument, got %d", name, len(args))
	}
	a, ok := args[0].(T)
	if !ok {
		return zero, fmt.Errorf("%s takes a %T, got %T", name, zero, args[0])
	}
	return a, nil
}

// call runs a function.
func (s *state) call(n parse.Node, name string, args []any) (any, error) {
	r, err := s.fn(n, name, args)
	if err != nil {
		return nil, s.errorf(n, "%s: %v", name, err)
	}
	return r, nil
}

func (s *state) fn(n parse.Node, name string, args []any) (any, error) {
	arity := func(k int) error {
		if len(args) != k {
			return fmt.Errorf("takes %d arguments, got %d", k, len(args))
		}
		return nil
	}
	switch name {
	case "json":
		if err := arity(1); err != nil {
			return nil, err
		}
		return toJSON(printable(args[0]))
	case "duration":
		if err := arity(1); err != nil {
			return nil, err
		}
		d, ok := args[0].(time.Duration)
		if !ok {
			return nil, fmt.Errorf("takes a duration, got %T", args[0])
		}
		return roundDuration(d), nil
	case "include":
		if err := arity(2); err != nil {
			return nil, err
		}
		tname, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("takes a template name, got %T", args[0])
		}
		var b strings.Builder
		if err := s.include(n, tname, args[1], &b); err != nil {
			return nil, err
		}
		return b.String(), nil
	case "not":
		if err := arity(1); err != nil {
			return nil, err
		}
		return !truth(args[0]), nil
	case "and", "or":
		if len(args) == 0 {
			return nil, errors.New("takes at least 1 argument")
		}
		for _, a := range args[:len(args)-1] {
			if truth(a) == (name == "or") {
				return a, nil
			}
		}
		return args[len(args)-1], nil
	case "len":
		if err := arity(1); err != nil {
			return nil, err
		}
		if str, ok := printable(args[0]).(string); ok {
			return len(str), nil
		}
		return nil, fmt.Errorf("takes a string, got %T", args[0])
	case "print":
		return fmt.Sprint(printables(args)...), nil
	case "printf":
		if len(args) == 0 {
			return nil, errors.New("takes a format")
		}
		format, ok := args[0].(string)
		if !ok {
			return nil, fmt.Errorf("takes a format string, got %T", args[0])
		}
		return fmt.Sprintf(format, printables(args[1:])...), nil
	case "eq", "ne":
		if len(args) < 2 {
			return nil, errors.New("takes at least 2 arguments")
		}
		eq := false
		for _, b := range args[1:] {
			c, err := compare(args[0], b)
			if err != nil {
				return nil, err
			}
			eq = eq || c == 0
		}
		if name == "ne" {
			if len(args) != 2 {
				return nil, errors.New("takes 2 arguments")
			}
			return !eq, nil
		}
		return eq, nil
	case "lt", "le", "gt", "ge":
		if err := arity(2); err != nil {
			return nil, err
		}
		c, err := compare(args[0], args[1])
		if err != nil {
			return nil, err
		}
		return map[string]bool{"lt": c < 0, "le": c <= 0, "gt": c > 0, "ge": c >= 0}[name], nil
	}
	return nil, errors.New("unknown function")
}

// printable turns the values of this package's types into what fmt and
// encoding/json should see.
func printable(v any) any {
	if p, ok := v.(Phase); ok {
		return string(p)
	}
	return v
}

func printables(vs []any) []any {
	out := make([]any, len(vs))
	for i, v := range vs {
		out[i] = printable(v)
	}
	return out
}

// truth is text/template's: false, 0, "" and nil are false.
func truth(v any) bool {
	switch v := printable(v).(type) {
	case nil:
		return false
	case bool:
		return v
	case string:
		return v != ""
	case int:
		return v != 0
	case int64:
		return v != 0
	case float64:
		return v != 0
	case time.Duration:
		return v != 0
	}
	return true
}

// compare orders two basic values of the same kind: strings, numbers
// (ints and floats together), durations, times or booleans (equality).
func compare(a, b any) (int, error) {
	a, b = printable(a), printable(b)
	if x, ok := number(a); ok {
		if y, ok := number(b); ok {
			switch {
			case x < y:
				return -1, nil
			case x > y:
				return 1, nil
			}
			return 0, nil
		}
	}
	switch x := a.(type) {
	case string:
		if y, ok := b.(string); ok {
			return strings.Compare(x, y), nil
		}
	case time.Time:
		if y, ok := b.(time.Time); ok {
			return x.Compare(y), nil
		}
	case bool:
		if y, ok := b.(bool); ok {
			if x == y {
				return 0, nil
			}
			return 1, nil
		}
	}
	return 0, fmt.Errorf("cannot compare %T with %T", a, b)
}

func number(v any) (float64, bool) {
	switch v := v.(type) {
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	case float64:
		return v, true
	case time.Duration:
		return float64(v), true
	}
	return 0, false
}
