// Command readme writes the chart's README.md from its values.yaml and
// README.md.gotmpl with the pinned helm-docs (make chart-docs).
package main

import (
	"context"

	"github.com/lastcall/lastcall/test/chart"
)

func main() {
	chart.Generate(func(ctx context.Context) (map[string][]byte, error) {
		doc, err := chart.README(ctx)
		return map[string][]byte{chart.READMEPath: doc}, err
	})
}
