package cluster

import (
	"context"
	"fmt"
	"maps"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
)

// NodeOption changes the node AddNode creates.
type NodeOption func(*corev1.Node)

// WithLabels adds labels to the node.
func WithLabels(labels map[string]string) NodeOption {
	return func(n *corev1.Node) { maps.Copy(n.Labels, labels) }
}

// WithProviderID sets the node's spec.providerID (for example
// "aws:///us-east-1a/i-0123456789abcdef0").
func WithProviderID(id string) NodeOption {
	return func(n *corev1.Node) { n.Spec.ProviderID = id }
}

// WithTaints adds taints to the node.
func WithTaints(taints ...corev1.Taint) NodeOption {
	return func(n *corev1.Node) { n.Spec.Taints = append(n.Spec.Taints, taints...) }
}

// AddNode creates a node managed by kwok (annotation kwok.x-k8s.io/node=fake,
// labels type=kwok and kubernetes.io/hostname=name) and waits until it is
// Ready and the node-lifecycle controller has removed its not-ready taint,
// so pods can be scheduled on it. If ctx has no deadline, the wait is
// bounded by WithWaitTimeout.
func (c *Cluster) AddNode(ctx context.Context, name string, opts ...NodeOption) (*corev1.Node, error) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        name,
			Annotations: map[string]string{kwokNodeAnnotation: kwokNodeValue},
			Labels: map[string]string{
				"type":                   "kwok",
				"kubernetes.io/hostname": name,
				"kubernetes.io/os":       "linux",
				"kubernetes.io/arch":     "amd64",
			},
		},
	}
	for _, opt := range opts {
		opt(node)
	}
	ctx, cancel := c.withWaitTimeout(ctx)
	defer cancel()
	if _, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating node %s: %w", name, err)
	}
	var ready *corev1.Node
	lw := nameListWatch(c.Client.CoreV1().RESTClient(), "nodes", "", name)
	err := waitStore(ctx, lw, &corev1.Node{}, func(objs []any) bool {
		for _, o := range objs {
			if n := o.(*corev1.Node); NodeSchedulable(n) {
				ready = n.DeepCopy()
				return true
			}
		}
		return false
	})
	if err != nil {
		return nil, fmt.Errorf("waiting for node %s to be Ready without the not-ready taint (see %s and %s): %w",
			name, c.LogPath(Kwok), c.LogPath(ControllerManager), err)
	}
	return ready, nil
}

// NodeSchedulable reports whether the node is Ready and free of the
// not-ready taint, as AddNode waits for.
func NodeSchedulable(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady {
			return false
		}
	}
	for _, cond := range n.Status.Conditions {
		if cond.Type == corev1.NodeReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// CreateNamespace creates a namespace named prefix plus a random suffix and
// waits until its default ServiceAccount exists, so pods can be created in
// it. It returns the namespace's name. If ctx has no deadline, the wait is
// bounded by WithWaitTimeout.
func (c *Cluster) CreateNamespace(ctx context.Context, prefix string) (string, error) {
	if !strings.HasSuffix(prefix, "-") {
		prefix += "-"
	}
	ctx, cancel := c.withWaitTimeout(ctx)
	defer cancel()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: prefix}}
	ns, err := c.Client.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
	if err != nil {
		return "", fmt.Errorf("creating a namespace %s*: %w", prefix, err)
	}
	if err := c.waitServiceAccount(ctx, ns.Name); err != nil {
		return "", err
	}
	return ns.Name, nil
}

// waitServiceAccount waits for the ServiceAccount "default" of namespace ns.
func (c *Cluster) waitServiceAccount(ctx context.Context, ns string) error {
	lw := nameListWatch(c.Client.CoreV1().RESTClient(), "serviceaccounts", ns, "default")
	err := waitStore(ctx, lw, &corev1.ServiceAccount{}, func(objs []any) bool { return len(objs) > 0 })
	if err != nil {
		return fmt.Errorf("waiting for ServiceAccount %s/default: %w", ns, err)
	}
	return nil
}

// WaitPodsReady waits until at least n pods of namespace ns matching the
// label selector are Running and Ready and not being deleted. If ctx has no
// deadline, the wait is bounded by WithWaitTimeout.
func (c *Cluster) WaitPodsReady(ctx context.Context, ns, selector string, n int) error {
	ctx, cancel := c.withWaitTimeout(ctx)
	defer cancel()
	lw := cache.NewFilteredListWatchFromClient(c.Client.CoreV1().RESTClient(), "pods", ns,
		func(o *metav1.ListOptions) { o.LabelSelector = selector })
	ready := 0
	err := waitStore(ctx, lw, &corev1.Pod{}, func(objs []any) bool {
		ready = 0
		for _, o := range objs {
			if PodReady(o.(*corev1.Pod)) {
				ready++
			}
		}
		return ready >= n
	})
	if err != nil {
		return fmt.Errorf("waiting for %d Running and Ready pods %q in namespace %s (%d are): %w",
			n, selector, ns, ready, err)
	}
	return nil
}

// PodReady reports whether the pod is Running, Ready and not being deleted.
func PodReady(p *corev1.Pod) bool {
	return p.DeletionTimestamp == nil && p.Status.Phase == corev1.PodRunning && ReadyCondition(p)
}

// ReadyCondition reports whether the pod's Ready condition is True, being
// deleted or not.
func ReadyCondition(p *corev1.Pod) bool {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.Status == corev1.ConditionTrue
		}
	}
	return false
}

// nameListWatch lists and watches the one object of a resource with that
// name.
func nameListWatch(c cache.Getter, resource, ns, name string) *cache.ListWatch {
	return cache.NewListWatchFromClient(c, resource, ns, fields.OneTermEqualSelector("metadata.name", name))
}

// waitStore watches what lw lists until done, given every object of the
// watch's up-to-date cache, reports true, or ctx ends.
func waitStore(ctx context.Context, lw cache.ListerWatcher, obj runtime.Object, done func(objs []any) bool) error {
	var store cache.Store
	precondition := func(s cache.Store) (bool, error) {
		store = s
		return done(s.List()), nil
	}
	condition := func(watch.Event) (bool, error) { return done(store.List()), nil }
	if _, err := watchtools.UntilWithSync(ctx, lw, obj, precondition, condition); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
		}
		return err
	}
	return nil
}

// withWaitTimeout bounds ctx by the cluster's wait timeout unless it already
// has a deadline.
func (c *Cluster) withWaitTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return context.WithCancel(ctx)
	}
	return context.WithTimeoutCause(ctx, c.opts.waitTimeout,
		fmt.Errorf("not done within %s", c.opts.waitTimeout))
}
