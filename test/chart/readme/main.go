// Command readme writes the chart's README.md from its values.yaml and
// README.md.gotmpl with the pinned helm-docs (make chart-docs).
package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/lastcall/lastcall/test/chart"
	"github.com/lastcall/lastcall/test/tools"
)

func main() {
	if err := run(context.Background()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(ctx context.Context) error {
	root, err := tools.RepoRoot()
	if err != nil {
		return err
	}
	doc, err := chart.README(ctx)
	if err != nil {
		return err
	}
	p := filepath.Join(root, chart.READMEPath)
	if err := os.WriteFile(p, doc, 0o644); err != nil {
		return err
	}
	fmt.Println("wrote", chart.READMEPath)
	return nil
}
