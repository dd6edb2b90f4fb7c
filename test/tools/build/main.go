// Command build builds and caches every pinned test tool (make tools).
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
	for _, t := range tools.All {
		start := time.Now()
		dir, err := tools.Build(ctx, t)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Printf("%-5s %-8s %-60s %s\n", t.Name, t.Version, dir, time.Since(start).Round(time.Millisecond))
	}
}
