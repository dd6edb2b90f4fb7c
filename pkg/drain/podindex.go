package drain

import (
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// PodIndex is the drain's view of pods: which pods run on a node, whether a
// pod is still there, and a signal when anything changes, so that waiting
// for pods to go is driven by the watch rather than by polling.
type PodIndex interface {
	OnNode(node string) ([]*corev1.Pod, error)
	Get(namespace, name string) (*corev1.Pod, bool)
	// Changed returns a channel closed at the next change of any pod.
	Changed() <-chan struct{}
}

const nodeNameIndex = "spec.nodeName"

// InformerIndex is a PodIndex backed by a shared pod informer.
type InformerIndex struct {
	informer cache.SharedIndexInformer
	notify   notifier
}

// NewInformerIndex indexes the informer's pods by node and subscribes to its
// changes. Call it before the informer starts.
func NewInformerIndex(informer cache.SharedIndexInformer) (*InformerIndex, error) {
	x := &InformerIndex{informer: informer}
	x.notify.init()
	err := informer.AddIndexers(cache.Indexers{nodeNameIndex: func(obj any) ([]string, error) {
		if p, ok := obj.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}, nil
		}
		return nil, nil
	}})
	if err != nil {
		return nil, fmt.Errorf("indexing pods by node: %w", err)
	}
	_, err = informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { x.notify.broadcast() },
		UpdateFunc: func(any, any) { x.notify.broadcast() },
		DeleteFunc: func(any) { x.notify.broadcast() },
	})
	if err != nil {
		return nil, fmt.Errorf("watching pods: %w", err)
	}
	return x, nil
}

// OnNode implements PodIndex.
func (x *InformerIndex) OnNode(node string) ([]*corev1.Pod, error) {
	objs, err := x.informer.GetIndexer().ByIndex(nodeNameIndex, node)
	if err != nil {
		return nil, err
	}
	pods := make([]*corev1.Pod, 0, len(objs))
	for _, o := range objs {
		if p, ok := o.(*corev1.Pod); ok {
			pods = append(pods, p)
		}
	}
	return pods, nil
}

// Get implements PodIndex.
func (x *InformerIndex) Get(namespace, name string) (*corev1.Pod, bool) {
	o, ok, err := x.informer.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil, false
	}
	p, ok := o.(*corev1.Pod)
	return p, ok
}

// Changed implements PodIndex.
func (x *InformerIndex) Changed() <-chan struct{} { return x.notify.wait() }

// HasSynced reports whether the informer has its initial list.
func (x *InformerIndex) HasSynced() bool { return x.informer.HasSynced() }

// notifier wakes every waiter at once: each wait gets the current channel,
// and broadcast closes it and starts a new one.
type notifier struct {
	mu sync.Mutex
	ch chan struct{}
}

func (n *notifier) init() { n.ch = make(chan struct{}) }

func (n *notifier) wait() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ch
}

func (n *notifier) broadcast() {
	n.mu.Lock()
	defer n.mu.Unlock()
	close(n.ch)
	n.ch = make(chan struct{})
}
