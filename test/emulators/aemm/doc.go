// Package aemm runs the real amazon-ec2-metadata-mock (AEMM) v1.12.0, built
// and cached by package test/tools, as an EC2 instance metadata service on
// 127.0.0.1 for the tests, the demo and the benchmarks.
//
// Start writes a config file (-c) into a private temporary directory, sets
// HOME to that directory (AEMM otherwise silently reads
// $HOME/aemm-config.json), drops AEMM_* variables from the environment (AEMM
// reads them through viper), picks a free port, and waits until the server
// answers. The child runs in its own process group and is killed by the
// kernel if the thread that started it dies. Stop kills it (SIGKILL: AEMM
// needs 2-3 s to exit on SIGTERM) and waits. AEMM has no runtime control
// API, so a scenario that needs different answers starts another server.
//
// # What was verified in AEMM's source and on the wire
//
// Timing. AEMM compares whole Unix seconds: a notice is served from the
// first request for which time.Now().Unix() >= trigger.Unix(), and 404 (with
// an HTML body) before. With a trigger time T on a whole second, the first
// request made at or after T gets the notice and every request before T gets
// 404; the test TestSpotNoticeAppearsAtTriggerTime polls every 5 ms around T
// and checks both sides. A fractional T would be served from floor(T), so
// Start refuses trigger times that are not whole seconds; TriggerAfter gives
// a usable one. The relative delays (MockDelay, RebalanceDelay,
// ASGTerminationDelay, AEMM's --mock-delay-sec, --rebalance-delay-sec and
// --asg-termination-delay-sec) count whole seconds from the moment AEMM's
// packages were initialised, which the caller cannot observe: the notice
// appears up to a second earlier than Start's return plus the delay. Use
// the trigger times when the moment matters (latency benchmarks).
//
// What each trigger governs:
//   - mock-trigger-time / mock-delay-sec: spot/instance-action,
//     spot/termination-time AND events/maintenance/scheduled (both signals
//     appear together).
//   - rebalance-trigger-time / rebalance-delay-sec:
//     events/recommendations/rebalance. With neither set the recommendation
//     is served from the start.
//   - asg-termination-trigger-time / asg-termination-delay-sec:
//     autoscaling/target-lifecycle-state, which answers 200 "InService"
//     before the trigger and "Terminated" from it on (never 404). With
//     neither set it is "Terminated" from the start.
//
// Pinned values. AEMM stamps spot's "time" with request time + 2 min and
// the rebalance "noticeTime" with the request time unless spot.time and
// spot.rebalance-rec-time are set, so a notice's content would change every
// second. Start always pins both (see Config).
//
// Scheduled events. AEMM serves one event with the JSON keys Code,
// Description, State, EventId, NotBefore, NotAfter and NotBeforeDeadline;
// the dates use the layout "2 Jan 2006 15:04:05 GMT" (day not zero-padded),
// formatted in the offset they were given in, so Start writes them in UTC.
// The event ID comes from metadata.values.event-id.
//
// IMDSv2. With IMDSv2Only every path except PUT /latest/api/token answers
// 401 without a valid token. The token endpoint is served in both modes.
//
// Subcommands. "spot" serves only the spot and rebalance paths, "events"
// only the scheduled events, "asglifecycle" only the target lifecycle state
// (besides the static metadata); the default serves all of them. The config
// keys are the same in every mode.
package aemm
