package gce

import (
	"context"
	"fmt"
	"path"
	"strings"

	"cloud.google.com/go/compute/metadata"
)

// Provisioning models of instance/scheduling/provisioning-model.
const (
	ProvisioningSpot     = "SPOT"
	ProvisioningStandard = "STANDARD"
)

// Instance is what the metadata server says about this VM.
type Instance struct {
	Name string
	// Zone is the zone's name (us-central1-a), not its full path.
	Zone string
	ID   string
	// Preemptible is instance/scheduling/preemptible: true for preemptible
	// and spot VMs.
	Preemptible bool
	// ProvisioningModel is SPOT or STANDARD.
	ProvisioningModel string
}

// Kind describes the VM for event details: "spot VM", "preemptible VM" or
// "VM".
func (i Instance) Kind() string {
	switch {
	case i.ProvisioningModel == ProvisioningSpot:
		return "spot VM"
	case i.Preemptible:
		return "preemptible VM"
	default:
		return "VM"
	}
}

// Identity reads the VM's name, zone, ID and scheduling from the metadata
// server.
func Identity(ctx context.Context, client *metadata.Client) (Instance, error) {
	get := func(p string) (string, error) {
		v, err := client.GetWithContext(ctx, p)
		if err != nil {
			return "", classify(fmt.Errorf("reading %s: %w", p, err))
		}
		return strings.TrimSpace(v), nil
	}
	var i Instance
	var err error
	if i.Name, err = get("instance/name"); err != nil {
		return Instance{}, err
	}
	zone, err := get("instance/zone")
	if err != nil {
		return Instance{}, err
	}
	i.Zone = path.Base(zone) // projects/<number>/zones/<zone>
	if i.ID, err = get("instance/id"); err != nil {
		return Instance{}, err
	}
	preemptible, err := get("instance/scheduling/preemptible")
	if err != nil {
		return Instance{}, err
	}
	i.Preemptible = strings.EqualFold(preemptible, "TRUE")
	// provisioning-model is newer than preemptible; treat its absence as
	// no information rather than an error.
	model, err := client.GetWithContext(ctx, "instance/scheduling/provisioning-model")
	switch {
	case err == nil:
		i.ProvisioningModel = strings.ToUpper(strings.TrimSpace(model))
	case isNotDefined(err):
	default:
		return Instance{}, classify(fmt.Errorf("reading instance/scheduling/provisioning-model: %w", err))
	}
	return i, nil
}
