// Command manifests writes the plain manifests under deploy/, rendered from
// the chart (make manifests).
package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

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
	files, err := chart.Manifests(ctx)
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "deploy")
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", filepath.Join("deploy", name))
	}
	return nil
}
