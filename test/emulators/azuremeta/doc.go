// Package azuremeta is an in-process fake of the scheduled events endpoint
// of the Azure Instance Metadata Service (IMDS), and of the one leaf of its
// instance metadata that names the VM, for tests and demos. It listens on
// 127.0.0.1 and speaks the documented wire protocol:
//
//	GET  /metadata/scheduledevents?api-version=2020-07-01   (Metadata: true)
//	POST /metadata/scheduledevents?api-version=2020-07-01   (Metadata: true)
//	     {"StartRequests": [{"EventId": "<uuid>"}]}
//	GET  /metadata/instance/compute/name?api-version=2021-02-01&format=text
//	     (Metadata: true)
//
// The GET answer is the document
//
//	{"DocumentIncarnation": 1, "Events": [{"EventId": ..., "EventType": ...,
//	  "ResourceType": "VirtualMachine", "Resources": ["vm"],
//	  "EventStatus": "Scheduled", "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
//	  "Description": "", "EventSource": "Platform", "DurationInSeconds": 30}]}
//
// # What follows Azure, and where from
//
// From Microsoft's "Azure Metadata Service: Scheduled Events for Linux VMs"
// and "Azure Instance Metadata Service" pages:
//   - Every request needs the header "Metadata: true"; without it IMDS
//     answers 400 with {"error": "Bad request. Required metadata header not
//     specified"}.
//   - A request without api-version answers 400 with {"error": "Bad
//     request. api-version was not specified in the request. For more
//     information refer to aka.ms/azureimds", "newest-versions": [...]}.
//   - DocumentIncarnation changes whenever the document does, so SetEvents
//     and every approval bump it.
//   - An event is listed while it is Scheduled or Started and disappears
//     when it is over; there is no "Completed" status.
//   - NotBefore is an RFC 1123 time in GMT ("Mon, 19 Sep 2016 18:29:47
//     GMT") and empty once the event has Started.
//   - A POST of StartRequests approves (acknowledges) events so that the
//     platform may start them early; the event then shows as Started, with
//     no NotBefore. Older API versions also sent DocumentIncarnation in the
//     POST body; it is accepted and ignored.
//   - DurationInSeconds is -1 when the duration is unknown.
//   - Instance metadata is versioned apart from scheduled events (the
//     versions in instanceAPIVersions are the page's list). A leaf such as
//     compute/name ("Name of the VM", since 2017-04-02) is read with
//     format=text, which must be given: the default format is json, which
//     a leaf refuses with 400. The answer is the bare value. On a scale set
//     of Uniform orchestration the name is <scale set>_<instance id>
//     ("Understand names and instance IDs for Azure Virtual Machine Scale
//     Set VMs"), as scheduled events name the VM in Resources.
//   - A request with an X-Forwarded-For header, or with a query parameter
//     given twice, is refused; an element that does not exist answers 404;
//     a method other than GET on instance metadata answers 405; 410, 429
//     and 500 are answers to retry (FailComputeName serves them).
//
// # What is the fake's own choice
//
// An api-version that is not one of the versions listed in apiVersions
// (the version table of the scheduled events page) or instanceAPIVersions
// is refused with 400 and a similar error text. A POST whose body is
// not JSON, has no StartRequests or names an EventId
// that is not listed answers 400 with an {"error": ...} body (Azure's text for
// these cases is not documented). The answer to a good POST is 200 with an
// empty body. Methods other than GET and POST answer 405, other paths 404.
// The time the platform takes to enable the service on first use (up to two
// minutes on Azure) is not emulated. Of instance metadata only compute/name
// is served; every other instance path answers 404, and compute/name
// answers 404 too until SetComputeName; its answer has Content-Type
// text/plain. A repeated query parameter and a leaf read without
// format=text are refused with 400 (the status Azure documents) and error
// texts of the fake's own; so is a request with X-Forwarded-For (Azure
// says it is rejected, not with which status).
//
// SetRawDocument serves any bytes instead of the document, to test how
// clients handle a malformed answer; SetStatus makes GETs fail with a status.
package azuremeta
