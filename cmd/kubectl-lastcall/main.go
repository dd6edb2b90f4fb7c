// Command kubectl-lastcall is lastcall as a kubectl plugin: kubectl
// lastcall plan NODE prints the drain lastcall would follow now, with
// kubectl's client flags and configuration ($KUBECONFIG, else
// ~/.kube/config), and -o wide says what kubectl drain would do with each
// pod.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/lastcall/lastcall/pkg/kubectlplugin"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(kubectlplugin.Main(ctx, os.Args[1:], os.Stdout, os.Stderr))
}
