// Package moto runs moto_server 5.2.1 (preinstalled with Python; not a Go
// module) on 127.0.0.1 as SQS, EC2 and Auto Scaling for the tests, and puts
// a LifecycleProxy in front of it for the two Auto Scaling calls moto lacks.
//
// Start looks for moto_server on PATH, then for python3 (running "python3 -m
// moto.server"); when neither can run moto, it fails with ErrNotInstalled,
// and the tests fail with it: they never skip. It picks a free port, runs
// the server in its own process group (killed by the kernel if the thread
// that started it dies), logs to a file in a private temporary directory,
// and polls until the server answers. The child gets no AWS_* variables
// (botocore inside moto reads them: an empty AWS_PROFILE made every request
// fail with 500) and no ~/.aws files. Stop kills the group and waits.
//
// # What was verified
//
// Timing: moto answers about 0.4 s after its start on an idle machine. Its
// first EC2 call takes about a second more while it loads its EC2 backend.
// Nine servers starting at once on a two-CPU machine took up to 20 s each,
// so a test binary should share one server and give each test names
// of its own (Reset clears everything, for all tests).
//
// Auto Scaling: CreateAutoScalingGroup needs a launch template (or a launch
// configuration, an instance ID or a mixed instances policy), and an
// Availability Zone or a subnet; without them moto answers ValidationError.
// moto does not check that the template's AMI exists. CreateGroup creates
// a template with EC2 CreateLaunchTemplate (a name of at least 3
// characters, which the SDK checks) and the group. The group's instances
// exist at once, InService, as EC2 instances tagged aws:autoscaling:groupName,
// with a PrivateDnsName. PutLifecycleHook succeeds even for a group that
// does not exist.
//
// Not implemented by moto: CompleteLifecycleAction and
// RecordLifecycleActionHeartbeat answer 500 with an HTML body (the SDK
// retries them, then fails to parse the body), and moto never sends
// lifecycle notifications to SQS: tests send those messages themselves.
//
// # The proxy
//
// LifecycleProxy answers the two calls as Auto Scaling does (the wire format
// of aws-sdk-go-v2 autoscaling v1.79, awsQuery): for an active action
// registered with Register, 200 with an empty Result element; otherwise 400
// ValidationError "No active Lifecycle Action found with instance ID i-..",
// which the SDK returns as a smithy.APIError after one attempt. Missing or
// empty required parameters and a result other than CONTINUE or ABANDON are
// ValidationErrors too. A heartbeat pushes the heartbeat timeout back;
// an action also ends after 100 heartbeat timeouts or 48 hours (Auto
// Scaling's global timeout). Expiry is checked whenever the proxy is asked
// or called, against the clock set with WithClock.
//
// FailNext injects errors for any action in its protocol: Auto Scaling and
// EC2 query actions (told apart by their Version parameter), and SQS JSON
// actions (by X-Amz-Target). With the SDK's standard retryer, 5xx and
// Throttling are retried (3 attempts in all) and other 4xx codes are not.
// Everything else is forwarded to moto with the proxy's Host header, so
// that the SQS queue URLs moto builds point at the proxy.
package moto
