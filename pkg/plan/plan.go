// Package plan is the drain of a node worked out ahead against its deadline:
// the groups pods go in, the grace each gets, when a PodDisruptionBudget
// would be overridden, and what stands in the way of a clean drain. The
// drain follows the same rules (package drain); lastcall plan prints a Plan,
// and the drainability gauge counts its blockers.
package plan

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/lastcall/lastcall/pkg/drain"
	"github.com/lastcall/lastcall/pkg/serving"
)

// Reason is a kind of blocker: a bounded metric label.
type Reason string

// The blockers a plan reports.
const (
	// ReasonPDB: a PodDisruptionBudget covering the pod allows no
	// disruption now.
	ReasonPDB Reason = "pdb-allows-no-disruption"
	// ReasonNoController: nothing recreates the pod once it is gone.
	ReasonNoController Reason = "no-controller"
	// ReasonEmptyDir: the pod's emptyDir data goes with the node.
	ReasonEmptyDir Reason = "emptydir"
	// ReasonNoPreStop: a Service sends the pod traffic, none of its
	// containers has a preStop hook and it lacks lastcall's serving
	// readiness gate, so requests in flight when it gets SIGTERM, and
	// those balancers still send it, fail (the 502s of a spot reclaim).
	ReasonNoPreStop Reason = "no-prestop-behind-service"
	// ReasonOnlyEndpoint: the pod is the only ready endpoint of a Service
	// (or, with --keep-services-serving off, every ready endpoint of it is
	// on the node): the Service has none from the pod's eviction until its
	// replacement is ready, and answers 503 meanwhile.
	ReasonOnlyEndpoint Reason = "only-ready-endpoint"
	// ReasonGraceTooLong: the pod's terminationGracePeriodSeconds does not
	// fit before the deadline; it will be cut short.
	ReasonGraceTooLong Reason = "grace-exceeds-deadline"
)

// ReasonLBNoDelay: a Service of type LoadBalancer sends its traffic
// through the node (externalTrafficPolicy Cluster, or Local with an
// endpoint here) and --lb-deregistration-delay is 0, so the drain may end,
// and a lifecycle action release the instance, while the load balancer
// still sends it connections. It is about the node, not a pod: a plan
// reports it in NodeBlockers, and the drainability gauge, which reads
// only the Services of the node's pods' namespaces, does not count it.
const ReasonLBNoDelay Reason = "lb-deregistration-delay-unset"

// Reasons lists every reason of a pod's blocker, in the order they are
// reported.
var Reasons = []Reason{ReasonPDB, ReasonNoController, ReasonEmptyDir, ReasonNoPreStop, ReasonOnlyEndpoint, ReasonGraceTooLong}

// Inputs are what a plan is made from: the node's pods, and the budgets and
// Services of their namespaces (others are ignored).
type Inputs struct {
	Node     string
	Now      time.Time
	Deadline time.Time
	Pods     []*corev1.Pod
	Budgets  []*policyv1.PodDisruptionBudget
	Services []*corev1.Service
	// LoadBalancers are the Services of type LoadBalancer, of any
	// namespace; nil when not read.
	LoadBalancers []*corev1.Service
	// ReadyElsewhere counts the Ready pods a Service selects on nodes other
	// than Node; nil when unknown (no pod is then taken for a Service's
	// last endpoint).
	ReadyElsewhere func(*corev1.Service) int
}

// Plan is a drain worked out ahead.
type Plan struct {
	Node     string       `json:"node"`
	Now      time.Time    `json:"now"`
	Deadline time.Time    `json:"deadline"`
	Margin   Seconds      `json:"marginSeconds"`
	Policy   drain.Policy `json:"policy"`
	// LBDelay is the wait between leaving the load balancers and the
	// first eviction, as shortened for this deadline.
	LBDelay Seconds   `json:"lbDelaySeconds"`
	Groups  []Group   `json:"groups"`
	Skipped []Skipped `json:"skipped"`
	// Terminating pods are already going; the first group waits for them.
	Terminating []Skipped `json:"terminating"`
	// Budgets are the PodDisruptionBudgets covering pods here that allow
	// no disruption now.
	Budgets []Budget `json:"blockingBudgets"`
	// Finish is when the last pod would be gone if every pod used its
	// whole grace period, which is what it asks for, each group starting
	// once the one before is gone (cut short at its end).
	Finish time.Time `json:"estimatedFinish"`
	// Fits says whether the drain finishes by Deadline less Margin with
	// every pod shut down gracefully.
	Fits bool `json:"fits"`
	// Problems say why it does not fit.
	Problems []string `json:"problems"`
	// NodeBlockers degrade the drain of the node as a whole, whatever its
	// pods (ReasonLBNoDelay).
	NodeBlockers []Blocker `json:"nodeBlockers"`
	// OneAtATime are the Services (namespace/name) whose every ready
	// endpoint is on the node: the drain lets their pods go one at a time,
	// each next one once a replacement is ready on another node
	// (--keep-services-serving).
	OneAtATime []string `json:"oneAtATime"`
	// KubectlDrain is set by the kubectl plugin only.
	KubectlDrain *KubectlDrain `json:"kubectlDrain,omitempty"`
}

// Group is pods evicted together.
type Group struct {
	Name  string    `json:"name"`
	Start time.Time `json:"estimatedStart"`
	// End is when the group's pods must be gone, leaving the later
	// groups their grace periods (zero without a deadline).
	End  time.Time `json:"end"`
	Pods []Pod     `json:"pods"`
}

// Pod is one pod's part in the plan.
type Pod struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Controller is the kind of the pod's controller; empty when none.
	Controller string `json:"controller"`
	// Grace is what the pod asks for; Clamped what it gets when evicted at
	// its group's start (equal when it fits).
	Grace   Seconds `json:"graceSeconds"`
	Clamped Seconds `json:"clampedGraceSeconds"`
	// OverrideAt is set when a budget blocks the pod and the policy is
	// graceful-override: when it is deleted anyway.
	OverrideAt *time.Time `json:"overrideAt,omitempty"`
	Blockers   []Blocker  `json:"blockers"`
	// KubectlDrain is what kubectl drain would do with the pod, when the
	// plan was made by the kubectl plugin (see Plan.KubectlDrain).
	KubectlDrain string `json:"kubectlDrain,omitempty"`
}

// Blocker is one thing that makes the pod's drain less than clean.
type Blocker struct {
	Reason Reason `json:"reason"`
	Detail string `json:"detail"`
}

// Skipped is a pod the drain leaves, and the rule that says so.
type Skipped struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Rule      string `json:"rule"`
	// KubectlDrain: as Pod's.
	KubectlDrain string `json:"kubectlDrain,omitempty"`
}

// KubectlDrain is what kubectl drain would make of the node, pod by pod
// in Pod.KubectlDrain and Skipped.KubectlDrain.
type KubectlDrain struct {
	// Command is the kubectl drain asked about.
	Command string `json:"command"`
	// Refused are the reasons it would refuse to drain the node at all;
	// empty when it would go ahead.
	Refused []string `json:"refused"`
}

// awsTargetType is the AWS Load Balancer Controller's annotation choosing
// an NLB's targets: "ip" (pods) or "instance" (nodes).
const awsTargetType = "service.beta.kubernetes.io/aws-load-balancer-nlb-target-type"

// nodeBlockers are the blockers of the node as a whole: a load balancer
// sending through it with no deregistration delay to wait out.
func nodeBlockers(in Inputs, o drain.Options) []Blocker {
	out := []Blocker{}
	if o.LBDelay > 0 {
		return out
	}
	for _, svc := range in.LoadBalancers {
		if svc.Spec.Type != corev1.ServiceTypeLoadBalancer || svc.Annotations[awsTargetType] == "ip" {
			continue // an IP-target balancer sends to pods, not nodes
		}
		policy := "Cluster"
		if svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal {
			policy = "Local"
			if readyOnNode(svc, in.Pods) == 0 {
				continue // the balancer does not send to this node
			}
		}
		out = append(out, Blocker{Reason: ReasonLBNoDelay, Detail: "Service " + svc.Namespace + "/" + svc.Name +
			" of type LoadBalancer (externalTrafficPolicy " + policy + ") sends through the node and --lb-deregistration-delay is 0:" +
			" the drain may end, and a lifecycle action release the instance, while the load balancer still sends it connections"})
	}
	return out
}

// Budget is a PodDisruptionBudget that blocks evictions now.
type Budget struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Pods      []string `json:"pods"`
}

// Build works out the drain of in.Node at in.Now against in.Deadline, with
// the drain's options.
func Build(in Inputs, o drain.Options) Plan {
	p := Plan{Node: in.Node, Now: in.Now, Deadline: in.Deadline, Margin: Seconds(o.DeadlineMargin), Policy: o.Policy,
		Groups: []Group{}, Skipped: []Skipped{}, Terminating: []Skipped{}, Budgets: []Budget{}, Problems: []string{}, OneAtATime: []string{},
		NodeBlockers: nodeBlockers(in, o)}
	sorted := drain.Sort(in.Pods, o)
	for rule, pods := range sorted.Skipped {
		for _, pod := range pods {
			p.Skipped = append(p.Skipped, Skipped{Namespace: pod.Namespace, Name: pod.Name, Rule: rule})
		}
	}
	slices.SortFunc(p.Skipped, func(a, b Skipped) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	var evictable []*corev1.Pod
	for _, g := range sorted.Groups {
		evictable = append(evictable, g.Pods...)
	}
	lbDelay := drain.LBDelay(o.LBDelay, evictable, in.Now, in.Deadline, o.DeadlineMargin)
	p.LBDelay = Seconds(lbDelay)
	budgets := map[string]*Budget{}
	start := in.Now.Add(lbDelay)
	ends := drain.GroupEnds(sorted.Groups, in.Now, in.Deadline, o.DeadlineMargin)
	// A pod already terminating holds the first group until it is gone.
	for _, pod := range sorted.Terminating {
		p.Terminating = append(p.Terminating, Skipped{Namespace: pod.Namespace, Name: pod.Name, Rule: "terminating"})
	}
	slices.SortFunc(p.Terminating, func(a, b Skipped) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	finish := start // every pod gone, each using its whole grace
	for gi, g := range sorted.Groups {
		end := ends[gi]
		group := Group{Name: g.Name, Start: start, End: end}
		next := start // when the drain moves on: pods gone, cut at end
		if gi == 0 {
			for _, pod := range sorted.Terminating {
				if pod.DeletionTimestamp != nil {
					next = later(next, pod.DeletionTimestamp.Time)
				}
			}
		}
		for _, pod := range sortPods(g.Pods) {
			grace := drain.NeededGrace(pod)
			pp := Pod{Namespace: pod.Namespace, Name: pod.Name, Controller: controller(pod), Grace: Seconds(grace), Clamped: Seconds(grace)}
			if c := drain.ClampGrace(pod, start, end, 0); c != nil {
				pp.Clamped = Seconds(time.Duration(*c) * time.Second)
			}
			pp.Blockers = blockers(pod, in, start, end)
			for _, svc := range lastEndpoints(pod, in) {
				name := svc.Namespace + "/" + svc.Name
				switch n := readyOnNode(svc, in.Pods); {
				case n == 1:
					pp.Blockers = append(pp.Blockers, Blocker{Reason: ReasonOnlyEndpoint,
						Detail: "Service " + svc.Name + " has no other ready endpoint: none until its replacement is ready"})
				case !o.KeepServicesServing:
					pp.Blockers = append(pp.Blockers, Blocker{Reason: ReasonOnlyEndpoint,
						Detail: "every ready endpoint of Service " + svc.Name + " is on the node and --keep-services-serving is off: none until replacements are ready"})
				case !slices.Contains(p.OneAtATime, name):
					p.OneAtATime = append(p.OneAtATime, name)
				}
			}
			from := start // when the pod is told to stop
			for _, b := range blockingBudgets(pod, in.Budgets) {
				key := b.Namespace + "/" + b.Name
				if budgets[key] == nil {
					budgets[key] = &Budget{Namespace: b.Namespace, Name: b.Name}
				}
				budgets[key].Pods = append(budgets[key].Pods, pod.Name)
				pp.Blockers = append(pp.Blockers, Blocker{Reason: ReasonPDB,
					Detail: "PodDisruptionBudget " + b.Name + " allows 0 disruptions"})
			}
			if slices.ContainsFunc(pp.Blockers, func(b Blocker) bool { return b.Reason == ReasonPDB }) {
				switch {
				case o.Policy == drain.PolicyGracefulOverride && !in.Deadline.IsZero():
					at := drain.OverrideAt(pod, in.Now, end, 0)
					pp.OverrideAt = &at
					from = at
					left := max(0, end.Sub(at))
					pp.Clamped = Seconds(min(grace, left))
					if grace > left {
						p.Problems = append(p.Problems, "pod "+pod.Namespace+"/"+pod.Name+" is blocked by its PodDisruptionBudget until "+
							at.Sub(in.Now).Round(time.Second).String()+" from now, then has "+left.Round(time.Second).String()+" of the "+grace.String()+" it asks for")
					}
				default:
					p.Problems = append(p.Problems, "pod "+pod.Namespace+"/"+pod.Name+" is blocked by its PodDisruptionBudget and the policy is "+string(o.Policy))
				}
			} else if !in.Deadline.IsZero() && grace > end.Sub(start) {
				p.Problems = append(p.Problems, "pod "+pod.Namespace+"/"+pod.Name+" asks for "+grace.String()+
					" to shut down and would have "+max(0, end.Sub(start)).String())
			}
			finish = later(finish, from.Add(grace))
			gone := from.Add(time.Duration(pp.Clamped))
			if !in.Deadline.IsZero() && gone.After(end) {
				gone = later(end, from)
			}
			next = later(next, gone)
			group.Pods = append(group.Pods, pp)
		}
		p.Groups = append(p.Groups, group)
		start = next
	}
	p.Finish = finish
	for _, k := range slices.Sorted(maps.Keys(budgets)) {
		slices.Sort(budgets[k].Pods)
		p.Budgets = append(p.Budgets, *budgets[k])
	}
	end := in.Deadline.Add(-o.DeadlineMargin)
	p.Fits = len(p.Problems) == 0 && (in.Deadline.IsZero() || !p.Finish.After(end))
	if len(p.Problems) == 0 && !p.Fits {
		p.Problems = append(p.Problems, "the last pod would be gone at "+p.Finish.UTC().Format(time.RFC3339)+", after "+end.UTC().Format(time.RFC3339))
	}
	return p
}

// Counts is the number of pods blocked for each reason (every reason
// present, zero or not).
func (p Plan) Counts() map[Reason]int {
	c := map[Reason]int{}
	for _, r := range Reasons {
		c[r] = 0
	}
	for _, g := range p.Groups {
		for _, pod := range g.Pods {
			seen := map[Reason]bool{}
			for _, b := range pod.Blockers {
				if !seen[b.Reason] {
					seen[b.Reason] = true
					c[b.Reason]++
				}
			}
		}
	}
	return c
}

// blockers are the pod's blockers other than budgets.
func blockers(pod *corev1.Pod, in Inputs, start, end time.Time) []Blocker {
	var out []Blocker
	if controller(pod) == "" {
		out = append(out, Blocker{Reason: ReasonNoController, Detail: "no controller recreates it"})
	}
	for _, v := range pod.Spec.Volumes {
		if v.EmptyDir != nil {
			out = append(out, Blocker{Reason: ReasonEmptyDir, Detail: "emptyDir volume " + v.Name + " is lost"})
		}
	}
	if svc := selectingService(pod, in.Services); svc != "" && !hasPreStop(pod) && !serving.Gated(pod) {
		out = append(out, Blocker{Reason: ReasonNoPreStop, Detail: "Service " + svc + " sends it traffic, no container has a preStop hook " +
			"and it lacks the " + string(serving.Gate) + " readiness gate"})
	}
	if !in.Deadline.IsZero() && drain.NeededGrace(pod) > end.Sub(start) {
		out = append(out, Blocker{Reason: ReasonGraceTooLong,
			Detail: "terminationGracePeriodSeconds " + drain.NeededGrace(pod).String() + " does not fit in " + max(0, end.Sub(start)).String()})
	}
	return out
}

// blockingBudgets are the budgets of the pod's namespace that select it
// and allow no disruption now.
func blockingBudgets(pod *corev1.Pod, budgets []*policyv1.PodDisruptionBudget) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	for _, b := range budgets {
		if b.Namespace != pod.Namespace || b.Status.DisruptionsAllowed > 0 || b.Spec.Selector == nil {
			continue
		}
		sel, err := metav1.LabelSelectorAsSelector(b.Spec.Selector)
		// A nil selector matches nothing; an empty one, every pod.
		if err != nil || !sel.Matches(labels.Set(pod.Labels)) {
			continue
		}
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *policyv1.PodDisruptionBudget) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// selectingService names a Service of the pod's namespace whose selector
// picks the pod, or "".
func selectingService(pod *corev1.Pod, services []*corev1.Service) string {
	var names []string
	for _, s := range services {
		if s.Namespace != pod.Namespace || len(s.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels)) {
			names = append(names, s.Name)
		}
	}
	if len(names) == 0 {
		return ""
	}
	slices.Sort(names)
	return names[0]
}

// lastEndpoints are the Services that select the Ready pod and have no
// Ready pod on another node.
func lastEndpoints(pod *corev1.Pod, in Inputs) []*corev1.Service {
	if in.ReadyElsewhere == nil || !podReady(pod) {
		return nil
	}
	var out []*corev1.Service
	for _, s := range in.Services {
		if selects(s, pod) && in.ReadyElsewhere(s) == 0 {
			out = append(out, s)
		}
	}
	return out
}

// readyOnNode counts the Ready pods of pods that svc selects.
func readyOnNode(svc *corev1.Service, pods []*corev1.Pod) int {
	n := 0
	for _, p := range pods {
		if selects(svc, p) && podReady(p) && p.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

// selects says whether the Service sends the pod traffic.
func selects(s *corev1.Service, pod *corev1.Pod) bool {
	return s.Namespace == pod.Namespace && len(s.Spec.Selector) > 0 &&
		labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(pod.Labels))
}

// podReady says whether the pod's Ready condition is True.
func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ReadyElsewhere returns Inputs.ReadyElsewhere over pods (those of the
// Services' namespaces, wherever they run): the Ready pods a Service
// selects on nodes other than node.
func ReadyElsewhere(node string, pods func(namespace string) ([]*corev1.Pod, error)) func(*corev1.Service) int {
	return func(s *corev1.Service) int {
		list, err := pods(s.Namespace)
		if err != nil {
			return 1 // unknown: not taken for the last endpoint
		}
		n := 0
		for _, p := range list {
			if p.Spec.NodeName != node && p.Spec.NodeName != "" && p.DeletionTimestamp == nil && selects(s, p) && podReady(p) {
				n++
			}
		}
		return n
	}
}

func hasPreStop(pod *corev1.Pod) bool {
	for _, c := range pod.Spec.Containers {
		if c.Lifecycle != nil && c.Lifecycle.PreStop != nil {
			return true
		}
	}
	return false
}

func controller(pod *corev1.Pod) string {
	if ref := metav1.GetControllerOf(pod); ref != nil {
		return ref.Kind
	}
	return ""
}

func sortPods(pods []*corev1.Pod) []*corev1.Pod {
	out := slices.Clone(pods)
	slices.SortFunc(out, func(a, b *corev1.Pod) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	return out
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// Seconds is a duration that JSON gives in seconds.
type Seconds time.Duration

// MarshalJSON implements json.Marshaler.
func (s Seconds) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(s).Seconds()) }

// UnmarshalJSON implements json.Unmarshaler.
func (s *Seconds) UnmarshalJSON(b []byte) error {
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*s = Seconds(f * float64(time.Second))
	return nil
}

// String is the duration's.
func (s Seconds) String() string { return time.Duration(s).String() }
