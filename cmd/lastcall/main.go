// Command lastcall drains a Kubernetes node before the cloud takes it away.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/app"
	"github.com/lastcall/lastcall/pkg/kubemetrics"
	"github.com/lastcall/lastcall/pkg/plancmd"
)

func main() {
	kubemetrics.Install() // before any Kubernetes request
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if len(os.Args) > 1 && os.Args[1] == "plan" {
		os.Exit(plancmd.Main(ctx, os.Args[2:], os.Stdout, os.Stderr, os.LookupEnv))
	}
	o, err := app.Parse(os.Args[1:], os.LookupEnv, os.Stderr)
	if errors.Is(err, pflag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "lastcall:", err)
		os.Exit(2)
	}
	if err := app.Run(ctx, o, app.Env{LogOut: os.Stderr}); err != nil {
		fmt.Fprintln(os.Stderr, "lastcall:", err)
		os.Exit(1)
	}
}
