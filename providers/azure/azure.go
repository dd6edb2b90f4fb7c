// Package azure reads the interruption notices of an Azure VM from the
// Scheduled Events endpoint of the Azure Instance Metadata Service (IMDS):
// Spot evictions (Preempt), deletions (Terminate), host maintenance that
// restarts or moves the VM (Reboot, Redeploy) and short pauses (Freeze).
//
// The endpoint is polled: every read returns the whole document of events
// listed now, and an event disappears from it when it is over. The source
// is an interruption.Poller whose PollFunc parses the document (document.go),
// maps each event to an interruption.Event and sends ActionCancel for an
// event that was listed before and is no longer.
//
// The source is also an interruption.Acknowledger: after a successful drain
// the agent may approve the event (a POST of StartRequests), so that the
// platform starts it before its NotBefore. That is opt-in
// (Options.Acknowledge), because it shortens the time the node has left.
//
// # The wire protocol
//
// As documented in Microsoft's "Azure Metadata Service: Scheduled Events
// for Linux VMs":
//
//	GET  http://169.254.169.254/metadata/scheduledevents?api-version=2020-07-01
//	     Metadata: true
//	{"DocumentIncarnation": 1, "Events": [{"EventId": "<uuid>",
//	  "EventType": "Reboot|Redeploy|Freeze|Preempt|Terminate",
//	  "ResourceType": "VirtualMachine", "Resources": ["<vm name>"],
//	  "EventStatus": "Scheduled|Started",
//	  "NotBefore": "Mon, 19 Sep 2016 18:29:47 GMT",
//	  "Description": "...", "EventSource": "Platform|User",
//	  "DurationInSeconds": 30}]}
//
//	POST (same URL and header) {"StartRequests": [{"EventId": "<uuid>"}]}
//
// IMDS answers 400 without the Metadata header or the api-version. Events
// are sent to every VM of an availability set or scale set placement group,
// so Resources says which VMs an event is for, and the source keeps those
// that name its own VM (Options.VMName; the provider finds it from the
// node's providerID or from instance metadata, see identity.go). Approving
// an event lets it proceed for all of its Resources: the source therefore
// never approves an event that names another VM. IMDS must be reached
// without a web proxy.
package azure

import (
	"errors"
	"fmt"
	"net/url"
	"time"
)

// SourceName is the name of the source, in logs and metric labels.
const SourceName = "azure-scheduled-events"

// DefaultEndpoint is the IMDS base URL when Options.Endpoint is empty.
const DefaultEndpoint = "http://169.254.169.254"

// DefaultInterval is the poll interval when Options.Interval is zero.
const DefaultInterval = time.Second

const (
	// eventsPath is the scheduled events endpoint under the base URL.
	eventsPath = "/metadata/scheduledevents"
	// apiVersion is the version of the scheduled events API spoken here.
	apiVersion = "2020-07-01"
	// maxBody bounds what is read of one answer; a document is a few
	// hundred bytes per event.
	maxBody = 256 << 10
	// bodyExcerpt is how much of a body goes into an error.
	bodyExcerpt = 200
	// ackTimeout bounds one StartRequests POST.
	ackTimeout = 10 * time.Second
)

// Options configure the scheduled events source.
type Options struct {
	// Endpoint is the IMDS base URL; "" means DefaultEndpoint.
	Endpoint string
	// Interval between reads; zero means DefaultInterval.
	Interval time.Duration
	// DrainFreeze drains the node for a Freeze event. Off, a Freeze (a
	// pause of seconds that the VM survives) is only recorded
	// (interruption.ActionNotify).
	DrainFreeze bool
	// Acknowledge approves an event (StartRequests) when the agent has
	// drained the node for it, so that the platform may start it early.
	Acknowledge bool
	// VMName is this VM's name as the events' Resources give it (see
	// vmNameOf); only the events that name it are kept, compared without
	// regard to case, as Azure names are. It is required: every VM of an
	// availability set or scale-set placement group is shown the events
	// of all of them.
	VMName string
}

// Validate reports the first invalid option.
func (o Options) Validate() error {
	if o.Interval < 0 {
		return fmt.Errorf("azure: negative interval %s", o.Interval)
	}
	if o.VMName == "" {
		return errors.New("azure: no VM name: the events of every VM of the placement group would be taken for this VM's")
	}
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil {
			return fmt.Errorf("azure: endpoint: %w", err)
		}
		if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("azure: endpoint %q is not an http(s) URL with a host", o.Endpoint)
		}
	}
	return nil
}

// excerpt cuts s to at most bodyExcerpt bytes, marking the cut.
func excerpt(s string) string {
	if len(s) <= bodyExcerpt {
		return s
	}
	return s[:bodyExcerpt] + "..."
}
