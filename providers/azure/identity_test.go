package azure

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/lastcall/lastcall/pkg/interruption"
	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/test/emulators/azuremeta"
)

func TestVMNameOf(t *testing.T) {
	t.Parallel()
	const rg = "azure:///subscriptions/8ecadfc9-d1a3-4ea4-b844-0d9f87e4d7c8/resourceGroups/mc_rg_aks_westeurope/providers/Microsoft.Compute/"
	for _, tc := range []struct {
		providerID string
		want       string // "" means not recognised
	}{
		// A scale set of Uniform orchestration, as on AKS.
		{rg + "virtualMachineScaleSets/aks-nodepool1-12345678-vmss/virtualMachines/0", "aks-nodepool1-12345678-vmss_0"},
		{rg + "virtualMachineScaleSets/aks-nodepool1-12345678-vmss/virtualMachines/117", "aks-nodepool1-12345678-vmss_117"},
		// A plain VM: standalone, in an availability set, or in a scale
		// set of Flexible orchestration.
		{rg + "virtualMachines/aks-nodepool1-27053986-0", "aks-nodepool1-27053986-0"},
		{rg + "virtualMachines/flexprofile-mp-0_df53ee36", "flexprofile-mp-0_df53ee36"},
		// The instance named already as the VM, as in some IDs
		// cloud-provider-azure meets.
		{rg + "virtualMachineScaleSets/k8s-agentpool-36841236-vmss/virtualMachines/k8s-agentpool-36841236-vmss_1", "k8s-agentpool-36841236-vmss_1"},
		{rg + "virtualMachineScaleSets/pool/virtualMachines/POOL_12", "pool_12"},
		// Keys in any case, as ARM treats them; names kept as written.
		{"Azure:///SUBSCRIPTIONS/s/RESOURCEGROUPS/RG/PROVIDERS/microsoft.compute/VIRTUALMACHINESCALESETS/Pool-VMSS/VIRTUALMACHINES/3", "Pool-VMSS_3"},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualmachines/MyVM", "MyVM"},

		{"", ""},
		{"azure://", ""},
		{"azure:///", ""},
		{"aws:///us-east-1a/i-0123456789abcdef0", ""},
		{"gce://project/europe-west1-b/node-1", ""},
		{"kwok://node-1", ""},
		// Not a VM of Microsoft.Compute.
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.AzureStackHCI/virtualMachineInstances/vm1", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/disks/disk1", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool", ""},
		// A Uniform instance id is a decimal number.
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool/virtualMachines/other_1", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool/virtualMachines/pool_", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool/virtualMachines/pool_x", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool/virtualMachines/-1", ""},
		// Empty parts, a missing leading slash, more or fewer parts.
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/", ""},
		{"azure:///subscriptions/s/resourceGroups//providers/Microsoft.Compute/virtualMachines/vm", ""},
		{"azure://subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/vm/extensions/x", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines", ""},
		{"azure:///subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/pool/virtualMachines/1/", ""},
		{"azure:///resourceGroups/rg/subscriptions/s/providers/Microsoft.Compute/virtualMachines/vm", ""},
	} {
		got, ok := vmNameOf(tc.providerID)
		if got != tc.want || ok != (tc.want != "") {
			t.Errorf("vmNameOf(%q) = %q, %v; want %q", tc.providerID, got, ok, tc.want)
		}
	}
}

// azureProvider is the provider with its endpoint at fake, as
// --azure-endpoint sets it.
func azureProvider(t *testing.T, fake *azuremeta.Server, args ...string) *Provider {
	t.Helper()
	p := New()
	fs := pflag.NewFlagSet("lastcall", pflag.ContinueOnError)
	p.AddFlags(fs)
	if err := fs.Parse(append([]string{"--azure-endpoint=" + fake.URL()}, args...)); err != nil {
		t.Fatal(err)
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	return p
}

// providerSource is the one source of p.Sources for a node with
// providerID.
func providerSource(t *testing.T, p *Provider, providerID string) (interruption.Source, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	sources, err := p.Sources(ctx, provider.Env{Node: "node-1", ProviderID: providerID, PollInterval: pollInterval,
		Health: newRecordingHealth(), Log: testLogger(t)})
	if err != nil {
		return nil, err
	}
	if len(sources) != 1 {
		t.Fatalf("sources %v, want one", sources)
	}
	return sources[0], nil
}

// wantOnly checks that src, with one event for vmName and one for another
// VM listed, sends only the first, and approves it.
func wantOnly(t *testing.T, fake *azuremeta.Server, src interruption.Source, vmName string) {
	t.Helper()
	at := time.Now().Add(time.Hour)
	fake.SetEvents(
		scheduled("theirs", "Preempt", at, "neighbour_4"),
		scheduled("mine", "Preempt", at, strings.ToUpper(vmName)),
	)
	out := run(t, src)
	e := next(t, out)
	if e.ID != interruption.NewID(interruption.KindPreemption, "mine") {
		t.Fatalf("event %+v, want the one for %s", e, vmName)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	for _, ev := range []interruption.Event{e, {ID: interruption.NewID(interruption.KindPreemption, "theirs"), Kind: interruption.KindPreemption,
		Action: interruption.ActionDrain, Source: SourceName}} {
		if err := acknowledger(t, src).Acknowledge(ctx, ev); err != nil {
			t.Fatalf("Acknowledge %s: %v", ev.ID, err)
		}
	}
	if got := fake.Approved(); len(got) != 1 || got[0] != "mine" {
		t.Errorf("approved %v, want [mine]", got)
	}
}

// The providerID names the VM; instance metadata is not asked.
func TestProviderVMNameFromProviderID(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetComputeName("not-asked")
	p := azureProvider(t, fake, "--azure-acknowledge")
	src, err := providerSource(t, p, "azure:///subscriptions/s/resourceGroups/mc_rg/providers/Microsoft.Compute/virtualMachineScaleSets/aks-pool-vmss/virtualMachines/2")
	if err != nil {
		t.Fatal(err)
	}
	wantOnly(t, fake, src, "aks-pool-vmss_2")
	if n := fake.ComputeNameRequests(); n != 0 {
		t.Errorf("instance metadata asked %d times", n)
	}
}

// Without a providerID of Azure's, instance metadata names the VM.
func TestProviderVMNameFromInstanceMetadata(t *testing.T) {
	t.Parallel()
	for _, providerID := range []string{"", "kwok://node-1"} {
		t.Run("providerID="+providerID, func(t *testing.T) {
			t.Parallel()
			fake := startFake(t)
			fake.SetComputeName("aks-pool-vmss_7")
			src, err := providerSource(t, azureProvider(t, fake, "--azure-acknowledge"), providerID)
			if err != nil {
				t.Fatal(err)
			}
			wantOnly(t, fake, src, "aks-pool-vmss_7")
		})
	}
}

// Instance metadata that is busy or not ready yet is asked again.
func TestProviderVMNameRetried(t *testing.T) {
	t.Parallel()
	fake := startFake(t)
	fake.SetComputeName("vm-9")
	fake.FailComputeName(http.StatusGone, 2)
	src, err := providerSource(t, azureProvider(t, fake, "--azure-acknowledge"), "")
	if err != nil {
		t.Fatal(err)
	}
	if n := fake.ComputeNameRequests(); n != 3 {
		t.Errorf("%d requests, want 3", n)
	}
	wantOnly(t, fake, src, "vm-9")
}

// When the VM cannot be told, the provider refuses, saying what it tried.
func TestProviderVMNameUnknown(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		providerID string
		fail       int // compute/name answers this, or 404 when 0
		requests   int
		want       []string
	}{
		{"no providerID, no name", "", 0, 1, []string{"no spec.providerID", computeNamePath, "HTTP 404"}},
		{"another cloud's providerID", "aws:///us-east-1a/i-0123", 0, 1, []string{`"aws:///us-east-1a/i-0123" is not an Azure VM's`, computeNamePath, "HTTP 404"}},
		{"failing metadata", "", http.StatusInternalServerError, nameAttempts, []string{"no spec.providerID", computeNamePath, "HTTP 500"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fake := startFake(t)
			if tc.fail != 0 {
				fake.SetComputeName("never-read")
				fake.FailComputeName(tc.fail, 100)
			}
			src, err := providerSource(t, azureProvider(t, fake), tc.providerID)
			if err == nil {
				t.Fatalf("got source %v, want an error", src)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if n := fake.ComputeNameRequests(); n != tc.requests {
				t.Errorf("%d requests, want %d", n, tc.requests)
			}
		})
	}
}

// An answer that is not a name is refused, not retried.
func TestProviderVMNameMalformed(t *testing.T) {
	t.Parallel()
	for _, name := range []string{"two words", "a/b", strings.Repeat("x", maxName+1)} {
		fake := startFake(t)
		fake.SetComputeName(name)
		_, err := providerSource(t, azureProvider(t, fake), "")
		if err == nil || !strings.Contains(err.Error(), computeNamePath) {
			t.Errorf("name %.20q: error %v", name, err)
		}
		if n := fake.ComputeNameRequests(); n != 1 {
			t.Errorf("name %.20q: %d requests, want 1", name, n)
		}
	}
}
