// Command manifests writes the plain manifests under deploy/, rendered from
// the chart (make manifests).
package main

import (
	"context"
	"path/filepath"

	"github.com/lastcall/lastcall/test/chart"
)

func main() {
	chart.Generate(func(ctx context.Context) (map[string][]byte, error) {
		files, err := chart.Manifests(ctx)
		out := map[string][]byte{}
		for name, b := range files {
			out[filepath.Join("deploy", name)] = b
		}
		return out, err
	})
}
