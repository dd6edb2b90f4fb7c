package app

import (
	"github.com/lastcall/lastcall/pkg/provider"
	"github.com/lastcall/lastcall/providers/aws"
	"github.com/lastcall/lastcall/providers/azure"
	"github.com/lastcall/lastcall/providers/gce"
)

// Providers are the clouds lastcall knows, one line each, in the order
// detection prefers them when several answer. A new cloud is a folder
// under providers/ and a line here.
func Providers() []provider.Provider {
	return []provider.Provider{
		aws.New(),
		gce.New(),
		azure.New(),
	}
}
