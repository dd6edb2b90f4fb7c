// Command kubectl-lastcall is lastcall as a kubectl plugin: kubectl
// lastcall plan --node NAME prints the drain lastcall would follow now,
// with the client configuration kubectl uses ($KUBECONFIG, else
// ~/.kube/config; --kubeconfig and --context).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lastcall/lastcall/pkg/plancmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(plancmd.PluginMain(ctx, os.Args[1:], os.Stdout, os.Stderr, os.LookupEnv))
}
