package bench

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// memcg is a memory cgroup of one process's own, where its memory is read
// as the kubelet reads a container's: the working set is the usage less
// the inactive file pages, and is what memory limits, evictions and
// `kubectl top` go by.
type memcg struct {
	dir string
	v1  bool
}

// newMemcg makes a memory cgroup named name, under cgroup v1's memory
// hierarchy or cgroup v2's root, and removes it at the end of the
// benchmark. It returns nil where none can be made (not root, no memory
// controller), with the reason.
func newMemcg(b *testing.B, name string) (*memcg, string) {
	b.Helper()
	for _, c := range []struct {
		root, usage string
		v1          bool
	}{{"/sys/fs/cgroup/memory", "memory.usage_in_bytes", true}, {"/sys/fs/cgroup", "memory.current", false}} {
		if _, err := os.Stat(filepath.Join(c.root, c.usage)); err != nil && !os.IsNotExist(err) {
			continue
		}
		dir := filepath.Join(c.root, name)
		if err := os.Mkdir(dir, 0o755); err != nil {
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, c.usage)); err != nil {
			os.Remove(dir)
			continue
		}
		b.Cleanup(func() { os.Remove(dir) }) // after the process has exited
		return &memcg{dir: dir, v1: c.v1}, ""
	}
	return nil, "no memory cgroup could be made here (needs root and a memory controller)"
}

// usage returns the cgroup's memory usage, page cache included, and its
// working set, in bytes.
func (m *memcg) usage() (usage, workingSet int64, err error) {
	usageFile, inactive := "memory.current", "inactive_file"
	if m.v1 {
		usageFile, inactive = "memory.usage_in_bytes", "total_inactive_file"
	}
	raw, err := os.ReadFile(filepath.Join(m.dir, usageFile))
	if err != nil {
		return 0, 0, err
	}
	if usage, err = strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64); err != nil {
		return 0, 0, err
	}
	stat, err := os.ReadFile(filepath.Join(m.dir, "memory.stat"))
	if err != nil {
		return 0, 0, err
	}
	s := bufio.NewScanner(bytes.NewReader(stat))
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), inactive+" "); ok {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, 0, err
			}
			return usage, max(usage-n, 0), nil
		}
	}
	return 0, 0, fmt.Errorf("%s/memory.stat has no %s", m.dir, inactive)
}

// peak returns the cgroup's largest memory usage so far, page cache
// included: memory.max_usage_in_bytes on cgroup v1, memory.peak on v2.
func (m *memcg) peak() (int64, error) {
	file := "memory.peak"
	if m.v1 {
		file = "memory.max_usage_in_bytes"
	}
	raw, err := os.ReadFile(filepath.Join(m.dir, file))
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(strings.TrimSpace(string(raw)), 10, 64)
}

// coldCopy copies the binary at src to disk and drops the copy from the
// page cache, so a process started from it reads its pages again, charged
// to its own cgroup, as after an image pull whose pages were since
// reclaimed, and has page cache of its own.
func coldCopy(b *testing.B, src string) string {
	b.Helper()
	data, err := os.ReadFile(src)
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(b.TempDir(), filepath.Base(src))
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(data); err != nil {
		b.Fatal(err)
	}
	// Written back first: only clean pages can be dropped.
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		b.Fatalf("fadvise(DONTNEED) %s: %v", dst, err)
	}
	return dst
}
