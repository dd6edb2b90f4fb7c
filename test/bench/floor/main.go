// Command floor is the memory floor lastcall is measured against: a
// client-go clientset and the same two node-scoped informers the agent runs
// (protobuf, like the agent), and nothing else. It runs until killed.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: floor KUBECONFIG NODE")
		os.Exit(2)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	c, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	node := os.Args[2]
	nodes := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(c.CoreV1().RESTClient(), "nodes", "",
		fields.OneTermEqualSelector("metadata.name", node)), &corev1.Node{}, 0, cache.Indexers{})
	pods := cache.NewSharedIndexInformer(cache.NewListWatchFromClient(c.CoreV1().RESTClient(), "pods", "",
		fields.OneTermEqualSelector("spec.nodeName", node)), &corev1.Pod{}, 0, cache.Indexers{})
	go nodes.RunWithContext(ctx)
	go pods.RunWithContext(ctx)
	cache.WaitForCacheSync(ctx.Done(), nodes.HasSynced, pods.HasSynced)
	fmt.Println("synced")
	<-ctx.Done()
}
