// Package traffic is the path a request takes in tests, and the load that
// goes down it: a load generator, and two balancers fed by a real API
// server, so that tests can count the requests a node drain makes fail.
// Everything listens and dials on 127.0.0.0/8 only.
//
// LoadGen models a client: GET requests to one URL at a fixed rate, bounded
// by a count and a duration, each on its own goroutine so that slow answers
// do not slow the schedule, over kept-alive connections. Every request's
// outcome is counted (ok, 502, 503, 504, other 5xx, refused, reset,
// timeout, other) with its latency. Unlike most clients it never retries:
// a GET that breaks on a kept-alive connection before any answer, which
// Go's transport (and many clients) would silently send again, counts as
// reset, and apart in Summary.ResetReused. Latencies are all kept, so
// memory grows with rate times duration.
//
// PodBalancer models what sends a Service's traffic to its pods (an
// ingress controller, kube-proxy): it follows the Service's EndpointSlices
// through an informer and sends round-robin to the endpoints that are
// ready, each change taking effect after a propagation delay, as real data
// planes lag behind the API. Limits: no fallback to terminating endpoints
// when none is ready (kube-proxy has one), no session affinity, no
// topology, one port; endpoints without a targetRef are skipped, and an
// endpoint is dialled at the address the caller gives for its targetRef,
// never at its own.
//
// NodeBalancer models a cloud load balancer in instance mode: its targets
// are nodes, registered when Ready and taken out, after a deregistration
// delay, when they bear node.kubernetes.io/exclude-from-external-load-balancers,
// stop being Ready or go away. Limits: the delay stands for both the cloud
// controller's lag and the balancer's deregistration, during which the node
// still gets new requests (a real balancer stops new requests when
// draining starts, and cuts what is left when it ends; here requests in
// flight are bounded only by the upstream timeout); there are no health
// checks, and registration is immediate.
//
// Both balancers answer 503 when they have nowhere to send, 502 when the
// upstream refuses, resets or closes the connection, and 504 when it does
// not answer within the upstream timeout. Their upstream connections are
// kept alive, and Go's transport may retry a GET on one that broke before
// any answer, as proxies commonly do.
package traffic
