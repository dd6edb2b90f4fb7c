// Command build builds and caches every pinned test tool (make tools), or,
// given names, those tools only: `go run ./test/tools/build nth` builds
// aws-node-termination-handler, which the benchmarks otherwise build on
// demand.
package main

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/lastcall/lastcall/test/tools"
)

func main() {
	ctx := context.Background()
	want := tools.All
	if names := os.Args[1:]; len(names) > 0 {
		known := map[string]tools.Tool{tools.NTH.Name: tools.NTH}
		for _, t := range tools.All {
			known[t.Name] = t
		}
		want = nil
		for _, n := range names {
			t, ok := known[n]
			if !ok {
				fmt.Fprintf(os.Stderr, "unknown tool %q\n", n)
				os.Exit(2)
			}
			want = append(want, t)
		}
	}
	for _, t := range want {
		start := time.Now()
		dir, err := tools.Build(ctx, t)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%-5s %-8s %-60s %s\n", t.Name, t.Version, dir, time.Since(start).Round(time.Millisecond))
	}
}
