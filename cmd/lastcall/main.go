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
)

func main() {
	kubemetrics.Install() // before any Kubernetes request
	if len(os.Args) > 1 && os.Args[1] == "plan" {
		os.Exit(plan())
	}
	opts := app.NewOptions()
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	opts.AddFlags(fs)
	if err := app.Parse(fs, os.Args[1:], os.LookupEnv); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "lastcall:", err)
		os.Exit(2)
	}
	if err := opts.Validate(); err != nil {
		fmt.Fprintln(os.Stderr, "lastcall: invalid configuration:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.Run(ctx, opts, app.Env{LogOut: os.Stderr}); err != nil {
		fmt.Fprintln(os.Stderr, "lastcall:", err)
		os.Exit(1)
	}
}

// plan runs "lastcall plan" (see app.PlanMain) and returns its exit status.
func plan() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return app.PlanMain(ctx, os.Args[2:], os.Stdout, os.Stderr, os.LookupEnv)
}
