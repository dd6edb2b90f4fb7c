package azure

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"k8s.io/utils/clock"
)

// Which VM this is.
//
// Azure gives every VM of an availability set or of a scale-set placement
// group the scheduled events of all of them: "check the Resources field in
// the event to identify which VMs are affected" (Microsoft, "Azure Metadata
// Service: Scheduled Events for Linux VMs"). The source keeps only the
// events whose Resources name its own VM, and it must therefore know the
// name they give it: the VM's resource name, which for an instance of a
// scale set of Uniform orchestration (an AKS node pool) is
// <scale set>_<instance id>, as in the page's example ["WestNO_0",
// "WestNO_1"].

const (
	// computeNamePath is the instance metadata leaf with the VM's name
	// ("Name of the VM", Microsoft's "Azure Instance Metadata Service").
	computeNamePath = "/metadata/instance/compute/name"
	// instanceAPIVersion is a version of instance metadata with that leaf
	// (it has been there since 2017-04-02).
	instanceAPIVersion = "2021-02-01"
	// nameTimeout bounds one read of the name: a local call.
	nameTimeout = 2 * time.Second
	// nameAttempts is how many times a read that may succeed later (no
	// answer, 410, 429 or 5xx) is made before giving up; the waits between
	// them start at nameBackoff and double.
	nameAttempts = 4
	nameBackoff  = 500 * time.Millisecond
	// maxName bounds what is read of the name: a name is a few dozen
	// bytes.
	maxName = 1 << 10
)

// vmNameOf returns the name scheduled events give the VM of a node's
// spec.providerID, as cloud-provider-azure writes it (the comments of its
// GetNodeNameByProviderID, in pkg/provider/azure_vmss.go and
// azure_vmssflex.go, give each form):
//
//   - a VM, standalone, in an availability set, or in a scale set of
//     Flexible orchestration (whose VMs are plain VMs named
//     <scale set>_<8 characters>, e.g. flexprofile-mp-0_df53ee36):
//     azure:///subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Compute/virtualMachines/<vm>
//     is <vm>;
//   - an instance of a scale set of Uniform orchestration:
//     azure:///subscriptions/<subscription>/resourceGroups/<group>/providers/Microsoft.Compute/virtualMachineScaleSets/<scale set>/virtualMachines/<instance id>
//     is <scale set>_<instance id>. Microsoft's "Understand names and
//     instance IDs for Azure Virtual Machine Scale Set VMs" names such a VM
//     "{scale-set-name}_{instance-id}", the instance ID "a decimal number",
//     and says the VM's name in instance metadata is that name. The last
//     segment may also be that name already (cloud-provider-azure meets IDs
//     such as .../virtualMachines/k8s-agentpool-36841236-vmss_1).
//
// Resource IDs are compared without regard to case, as Azure does
// (cloud-provider-azure writes the resource group in lower case). ok is
// false for anything else, an empty providerID included.
func vmNameOf(providerID string) (name string, ok bool) {
	const scheme = "azure://"
	if len(providerID) <= len(scheme) || !strings.EqualFold(providerID[:len(scheme)], scheme) {
		return "", false
	}
	id, found := strings.CutPrefix(providerID[len(scheme):], "/")
	if !found {
		return "", false
	}
	p := strings.Split(id, "/")
	for _, s := range p {
		if s == "" {
			return "", false
		}
	}
	key := func(i int, want string) bool { return i < len(p) && strings.EqualFold(p[i], want) }
	if !key(0, "subscriptions") || !key(2, "resourceGroups") || !key(4, "providers") || !key(5, "Microsoft.Compute") {
		return "", false
	}
	switch {
	case len(p) == 8 && key(6, "virtualMachines"):
		return p[7], true
	case len(p) == 10 && key(6, "virtualMachineScaleSets") && key(8, "virtualMachines"):
		vmss, instance := p[7], p[9]
		if len(instance) > len(vmss)+1 && strings.EqualFold(instance[:len(vmss)+1], vmss+"_") {
			instance = instance[len(vmss)+1:]
		}
		if decimal(instance) {
			return vmss + "_" + instance, true
		}
	}
	return "", false
}

func decimal(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}

// vmName returns this VM's name as scheduled events give it: from the
// node's providerID, else from instance metadata. The error says what was
// tried.
func vmName(ctx context.Context, hc *http.Client, endpoint, providerID string, log *slog.Logger, clk clock.Clock) (string, error) {
	if name, ok := vmNameOf(providerID); ok {
		log.Info("this VM's name, from the node's providerID", "vm", name, "provider_id", providerID)
		return name, nil
	}
	name, err := computeName(ctx, hc, endpoint, clk)
	if err == nil {
		log.Info("this VM's name, from instance metadata", "vm", name, "provider_id", providerID)
		return name, nil
	}
	why := "the node has no spec.providerID"
	if providerID != "" {
		why = fmt.Sprintf("the node's spec.providerID %q is not an Azure VM's", excerpt(providerID))
	}
	return "", fmt.Errorf("cannot tell which VM this is, and so which scheduled events are its own: %s, and %w", why, err)
}

// computeName reads the VM's name from instance metadata, retrying an
// answer that may come right later.
func computeName(ctx context.Context, hc *http.Client, endpoint string, clk clock.Clock) (string, error) {
	wait := nameBackoff
	for attempt := 1; ; attempt++ {
		name, retry, err := readComputeName(ctx, hc, endpoint)
		if err == nil {
			return name, nil
		}
		if !retry || attempt == nameAttempts {
			return "", err
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("%w (then %w)", err, ctx.Err())
		case <-clk.After(wait):
		}
		wait *= 2
	}
}

// readComputeName makes one read of the name; retry says whether another
// may succeed.
func readComputeName(ctx context.Context, hc *http.Client, endpoint string) (name string, retry bool, err error) {
	ctx, cancel := context.WithTimeout(ctx, nameTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+computeNamePath+"?api-version="+instanceAPIVersion+"&format=text", nil)
	if err != nil {
		return "", false, fmt.Errorf("GET %s: %w", computeNamePath, err)
	}
	req.Header.Set("Metadata", "true")
	resp, err := hc.Do(req)
	if err != nil {
		return "", true, fmt.Errorf("GET %s: %w", computeNamePath, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxName+1))
	if err != nil {
		return "", true, fmt.Errorf("GET %s: reading the answer: %w", computeNamePath, err)
	}
	switch {
	case resp.StatusCode != http.StatusOK:
		retry := resp.StatusCode == http.StatusGone || resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500
		return "", retry, fmt.Errorf("GET %s: HTTP %d (body %q)", computeNamePath, resp.StatusCode, excerpt(string(body)))
	case len(body) > maxName:
		return "", false, fmt.Errorf("GET %s: answer longer than %d bytes", computeNamePath, maxName)
	}
	name = strings.TrimSpace(string(body))
	if name == "" || strings.ContainsAny(name, "/ \t\r\n") {
		return "", false, fmt.Errorf("GET %s: %q is not a VM name", computeNamePath, excerpt(name))
	}
	return name, false, nil
}
