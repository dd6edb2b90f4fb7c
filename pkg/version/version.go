// Package version holds the build's version, stamped with
// -ldflags "-X github.com/lastcall/lastcall/pkg/version.Version=...".
package version

// Version is the release version, or "dev".
var Version = "dev"
