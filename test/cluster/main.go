package cluster

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"testing"
)

// KeepDirEnv, when set to a non-empty value, makes Main keep the cluster's
// directory (logs, etcd data) after the tests.
const KeepDirEnv = "LASTCALL_KEEP_CLUSTER"

// Main is for a test package's TestMain: it starts one cluster for the
// package, sets *c, runs the tests and stops the cluster, returning the exit
// code for os.Exit. If the cluster does not start, it prints which component
// failed and the tail of its log to stderr and returns 1. SIGINT and SIGTERM
// stop the cluster and exit. Progress goes to stderr unless opts say
// otherwise.
//
//	var c *cluster.Cluster
//
//	func TestMain(m *testing.M) { os.Exit(cluster.Main(m, &c)) }
func Main(m *testing.M, c **Cluster, opts ...Option) int {
	logf := func(format string, args ...any) {
		fmt.Fprintf(os.Stderr, format+"\n", args...)
	}
	opts = append([]Option{WithLogf(logf), WithKeepDir(os.Getenv(KeepDirEnv) != "")}, opts...)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var started atomic.Pointer[Cluster]
	stopOnSignal(ctx, cancel, &started)

	cl, err := Start(ctx, opts...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: the local Kubernetes cluster did not start: %v\n", err)
		return 1
	}
	defer cl.Stop()
	started.Store(cl)
	*c = cl
	return m.Run()
}

// stopOnSignal handles SIGINT and SIGTERM until ctx ends: it cancels ctx,
// which aborts a Start in progress, and stops a started cluster and exits,
// since the tests themselves do not watch any context of Main's.
func stopOnSignal(ctx context.Context, cancel context.CancelFunc, started *atomic.Pointer[Cluster]) {
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	go func() {
		defer signal.Stop(sigs)
		select {
		case sig := <-sigs:
			fmt.Fprintf(os.Stderr, "cluster: %v received, stopping the cluster\n", sig)
			cancel()
			if cl := started.Load(); cl != nil {
				cl.Stop()
				os.Exit(1)
			}
		case <-ctx.Done():
		}
	}()
}
