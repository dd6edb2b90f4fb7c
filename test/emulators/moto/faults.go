package moto

import "net/http"

// Fault is an error answer of an AWS API: the HTTP status and the error
// code. LifecycleProxy.Inject answers with it in the wire format of the
// call's protocol (for SQS, awsJson1_0 with the X-Amzn-Query-Error header
// that aws-sdk-go-v2 reads the code from).
type Fault struct {
	Status int
	Code   string
}

// The faults the tests inject, as AWS answers them. With the SDK's default
// (standard) retryer, the throttles and the 5xx are retried (3 attempts in
// all, backing off up to 2 s then 4 s) and NoActiveLifecycleAction is
// returned after one attempt: TestFaultsSQS, TestFaultsNoActiveLifecycleAction
// and TestProxySDKRetries check them against the SDK.
var (
	// SQSThrottled is SQS's throttling answer: RequestThrottled, HTTP 403,
	// as the awsQueryError trait of the SQS model (sqs v1.52) declares it.
	// The SDK returns it as *types.RequestThrottled.
	SQSThrottled = Fault{Status: http.StatusForbidden, Code: "RequestThrottled"}
	// Throttling is Auto Scaling's throttling answer.
	Throttling = Fault{Status: http.StatusBadRequest, Code: "Throttling"}
	// InternalFailure is the 500 every AWS API may answer.
	InternalFailure = Fault{Status: http.StatusInternalServerError, Code: "InternalFailure"}
	// ServiceUnavailable is the 503 every AWS API may answer.
	ServiceUnavailable = Fault{Status: http.StatusServiceUnavailable, Code: "ServiceUnavailable"}
	// NoActiveLifecycleAction is Auto Scaling's answer to a lifecycle call
	// naming an action that is not (or no longer) active: ValidationError
	// "No active Lifecycle Action found with token ...".
	NoActiveLifecycleAction = Fault{Status: http.StatusBadRequest, Code: "ValidationError"}
)

// Inject makes the next n requests for action fail with f: FailNext with
// f's status and code.
func (p *LifecycleProxy) Inject(action string, f Fault, n int) {
	p.FailNext(action, f.Status, f.Code, n)
}

// Injected returns how many requests for action were answered by an
// injected fault.
func (p *LifecycleProxy) Injected(action string) int {
	n := 0
	for _, c := range p.Calls() {
		if c.Action == action && c.Injected {
			n++
		}
	}
	return n
}
