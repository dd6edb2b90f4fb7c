package kubectlplugin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	kubectldrain "k8s.io/kubectl/pkg/drain"

	"github.com/lastcall/lastcall/pkg/plan"
)

// KubectlCommand is the kubectl drain the plugin compares lastcall's
// drain with: the one operators run on a node that is going.
const KubectlCommand = "kubectl drain %s --ignore-daemonsets --delete-emptydir-data"

// What kubectl drain does with a pod.
const (
	// KubectlEvict: it evicts the pod.
	KubectlEvict = "evict"
	// KubectlIgnore: it leaves the pod, and says so (DaemonSet pods).
	KubectlIgnore = "ignore"
	// KubectlSkip: it leaves the pod silently (mirror pods).
	KubectlSkip = "skip"
	// KubectlRefuse: the pod makes it refuse the whole node.
	KubectlRefuse = "refuse"
)

// KubectlVerdicts asks kubectl's own drain code (k8s.io/kubectl/pkg/drain,
// as KubectlCommand configures it) what it would do with each pod of
// node: KubectlEvict, KubectlIgnore, KubectlSkip or KubectlRefuse, then,
// after ": ", kubectl's message, if any. The keys are namespace/name.
// refused are the errors with which it would refuse the node.
func KubectlVerdicts(ctx context.Context, client kubernetes.Interface, node string) (verdicts map[string]string, refused []string, err error) {
	h := &kubectldrain.Helper{Ctx: ctx, Client: client, IgnoreAllDaemonSets: true, DeleteEmptyDirData: true,
		Out: io.Discard, ErrOut: io.Discard}
	list, errs := h.GetPodsForDeletion(node)
	if list == nil {
		return nil, nil, fmt.Errorf("kubectl drain's pod selection: %w", errors.Join(errs...))
	}
	verdicts = map[string]string{}
	for _, p := range list.Pods() {
		verdicts[key(&p)] = KubectlEvict
	}
	// kubectl says why it leaves or refuses a pod only in its messages,
	// "<message>: ns/a, ns/b" joined by "; " (warnings) or one error
	// each ("cannot delete <message>: ns/a, ns/b").
	for _, w := range strings.Split(list.Warnings(), "; ") {
		msg, pods := split(w)
		for _, k := range pods {
			if verdicts[k] == "" {
				verdicts[k] = KubectlIgnore + ": " + msg
			} else {
				verdicts[k] += " (" + msg + ")"
			}
		}
	}
	for _, e := range errs {
		refused = append(refused, e.Error())
		msg, pods := split(strings.TrimPrefix(e.Error(), "cannot delete "))
		for _, k := range pods {
			verdicts[k] = KubectlRefuse + ": " + msg
		}
	}
	slices.Sort(refused)
	return verdicts, refused, nil
}

// split parses "<message>: ns/a, ns/b" (pod names hold no ": ").
func split(s string) (msg string, pods []string) {
	i := strings.LastIndex(s, ": ")
	if i < 0 {
		return s, nil
	}
	return s[:i], strings.Split(s[i+2:], ", ")
}

func key(p *corev1.Pod) string { return p.Namespace + "/" + p.Name }

// AddKubectlDrain sets, in p, what kubectl drain would do with each of its
// pods and with the node (see KubectlVerdicts); a pod it did not list
// (mirror pods, pods long terminating) is KubectlSkip.
func AddKubectlDrain(ctx context.Context, client kubernetes.Interface, p *plan.Plan) error {
	verdicts, refused, err := KubectlVerdicts(ctx, client, p.Node)
	if err != nil {
		return err
	}
	of := func(ns, name string) string {
		if v, ok := verdicts[ns+"/"+name]; ok {
			return v
		}
		return KubectlSkip
	}
	for gi := range p.Groups {
		for i, pod := range p.Groups[gi].Pods {
			p.Groups[gi].Pods[i].KubectlDrain = of(pod.Namespace, pod.Name)
		}
	}
	for i, s := range p.Skipped {
		p.Skipped[i].KubectlDrain = of(s.Namespace, s.Name)
	}
	for i, s := range p.Terminating {
		p.Terminating[i].KubectlDrain = of(s.Namespace, s.Name)
	}
	p.KubectlDrain = &plan.KubectlDrain{Command: fmt.Sprintf(KubectlCommand, p.Node), Refused: append([]string{}, refused...)}
	return nil
}
