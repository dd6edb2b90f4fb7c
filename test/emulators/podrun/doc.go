// Package podrun is a small pod runtime beside kwok, for the pods of a test
// cluster that must serve traffic through a drain: kwok finishes a pod's
// deletion the instant it is asked, so grace periods, preStop hooks and
// endpoint changes never happen under it.
//
// Start watches the pods matching a label selector (pods carrying
// cluster.ServedLabel, which kwok leaves alone). For each one scheduled to a
// node (spec.nodeName set) it plays the kubelet:
//
//   - It starts an HTTP server for the pod on a loopback address of its own
//     (127.2.x.y, port chosen by the kernel) and gives the pod a pod IP from
//     PodCIDR (10.241.x.y, same x.y). Neither is ever given to another pod by
//     this process, so a client that reaches a gone pod's address finds
//     nobody there. The server answers any request 200 with the pod's name;
//     a request with a body is answered (headers first, at once) when its
//     body ends, so a client can hold a request in flight as long as it
//     likes.
//   - Once the server listens it patches the pod's status: Running, the pod
//     IP, every container running and ready (ContainersReady True), and the
//     Ready condition True unless a readiness gate holds it (below).
//     Addr and AddrOf map a pod's UID, or an EndpointSlice endpoint's
//     targetRef, to the server's address.
//   - When the pod gets a deletionTimestamp it runs the preStop hook of the
//     first container (the sleep action, or an exec of "sleep N" or
//     "sh -c 'sleep N'"; any other hook is logged and skipped), cut short at
//     the grace period, then sends "SIGTERM", whose effect each pod chooses
//     with SignalAnnotation: Graceful (the default: stop accepting, finish
//     the requests in flight, then exit), Abrupt (close the listener and
//     every connection and exit) or Ignore (keep serving). The grace period
//     (deletionGracePeriodSeconds) counts from when the runtime sees the
//     deletion, preStop included; like the kubelet, at least 2 s remain
//     after the preStop hook. At its end the server is killed (every
//     connection closed). As soon as the server has exited, the runtime
//     records the container as terminated (exit code 0 after a graceful
//     exit, 143 after an abrupt one, 137 when killed; phase Succeeded or
//     Failed accordingly) and deletes the pod object with grace 0 and a UID
//     precondition, as the kubelet does.
//   - Readiness gates: as with the kubelet, a pod whose spec lists
//     readinessGates is Ready only while each gate's conditionType has a
//     condition with status True in the pod's status. Another client sets
//     those conditions; from the start until the deletion begins, the
//     runtime follows every change of them, patching the Ready condition
//     when it must change. Its status patches (strategic merge patches,
//     which merge status.conditions by type) carry only the condition types
//     it owns, so they never remove or overwrite a gate's condition.
//   - Readiness: the Ready condition stays as it is through the preStop hook
//     and turns False when the server stops accepting connections (at
//     "SIGTERM" for Graceful and Abrupt, at the kill for Ignore), as a
//     readiness probe on the server would see it, only at once rather than
//     a probe period later; gate changes during the deletion are not
//     followed. The EndpointSlice controller marks a terminating pod's
//     endpoints not ready but serving while its Ready condition is True.
//   - KillNode is the cloud taking the instance: every server of a pod on
//     the node stops at once and its connections are reset (RST). Nothing
//     more happens to those pods: no status update, no deletion, no restart,
//     as with a kubelet that is gone; pods later bound to the node are never
//     started.
//
// What is not modelled: images, init and sidecar containers, containers
// other than the first (they are only reported as running alongside it),
// restarts, probes (readiness follows the server and the readiness gates),
// the reason and message of a condition, node conditions and taints (a
// dead node still looks Ready until its lease runs out), pod IPs that route
// anywhere (no packet is sent to them), hostIP, volumes, and the kubelet's
// sync delays.
package podrun
