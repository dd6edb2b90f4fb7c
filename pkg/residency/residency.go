// Package residency gives back to the kernel the pages of lastcall's own
// binary that only start-up needed.
//
// Starting touches code and data all over the binary: every package's
// initialisation, the registration of every Kubernetes API type, the first
// List of each informer, the cloud's first reads. The kernel maps 64 KiB
// around each page touched, so once started the process keeps most of its
// binary mapped, and counted in its resident set, although an idle agent
// runs about a tenth of it.
//
// Release unmaps the binary's read-only mappings (code, read-only data, the
// function tables) after marking their pages cold. The pages stay in the
// page cache, where the kernel reclaims them first when the node needs
// memory, and each one lastcall touches again is mapped back from there:
// a minor fault, as at start-up. Writable mappings, and read-only ones
// holding pages of the process's own (relocated data), are never touched,
// so nothing is lost.
package residency

import "errors"

// Result says what a Release did.
type Result struct {
	// Mappings is how many mappings of the executable were released.
	Mappings int
	// Bytes is their total size.
	Bytes int64
	// FileBefore and FileAfter are the process's file-backed resident
	// memory (RssFile) before and right after, in bytes.
	FileBefore, FileAfter int64
}

// ErrUnsupported is returned where the kernel offers no way to do it.
var ErrUnsupported = errors.New("releasing the binary's pages is supported on Linux only")
