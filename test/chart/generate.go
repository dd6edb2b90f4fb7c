package chart

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/lastcall/lastcall/test/tools"
)

// Generate is the main of a command that writes files made from the
// chart: gen returns their contents by path relative to the repository
// root. Each file written is said on standard output; a failure exits 1.
func Generate(gen func(context.Context) (map[string][]byte, error)) {
	if err := generate(context.Background(), gen); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func generate(ctx context.Context, gen func(context.Context) (map[string][]byte, error)) error {
	root, err := tools.RepoRoot()
	if err != nil {
		return err
	}
	files, err := gen(ctx)
	if err != nil {
		return err
	}
	for _, name := range slices.Sorted(maps.Keys(files)) {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(p, files[name], 0o644); err != nil {
			return err
		}
		fmt.Println("wrote", name)
	}
	return nil
}
