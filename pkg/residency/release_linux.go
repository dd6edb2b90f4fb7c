package residency

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"reflect"
	"strconv"
	"strings"
	"syscall"
)

// Advice values from <linux/mman.h>; MADV_COLD is not in package syscall.
const (
	madvDontNeed = 4
	madvCold     = 20 // Linux 5.4
)

// Release releases the read-only mappings of the running executable.
func Release() (Result, error) {
	var r Result
	before, err := rssFile()
	if err != nil {
		return r, err
	}
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		return r, err
	}
	ms, err := releasable(smaps, reflect.ValueOf(Release).Pointer())
	if err != nil {
		return r, err
	}
	for _, m := range ms {
		// Cold first, so the pages leave the active list (and the
		// kubelet's working set) even while still cached; an older
		// kernel without MADV_COLD still gets them unmapped.
		_ = madvise(m.start, m.end-m.start, madvCold)
		if err := madvise(m.start, m.end-m.start, madvDontNeed); err != nil {
			return r, fmt.Errorf("madvise(MADV_DONTNEED) %x-%x: %w", m.start, m.end, err)
		}
		r.Mappings++
		r.Bytes += int64(m.end - m.start)
	}
	after, err := rssFile()
	if err != nil {
		return r, err
	}
	r.FileBefore, r.FileAfter = before, after
	return r, nil
}

func madvise(addr, length uintptr, advice int) error {
	if _, _, e := syscall.Syscall(syscall.SYS_MADVISE, addr, length, uintptr(advice)); e != 0 {
		return e
	}
	return nil
}

// mapping is one entry of /proc/self/smaps.
type mapping struct {
	start, end  uintptr
	perms       string
	dev         string
	inode       uint64
	path        string
	anonymousKB int64
}

// releasable returns the mappings of the file that holds pc (the
// executable) that are private, not writable and hold no page of the
// process's own: pages that are only ever a copy of the file.
func releasable(smaps []byte, pc uintptr) ([]mapping, error) {
	all, err := parseSmaps(smaps)
	if err != nil {
		return nil, err
	}
	var exe *mapping
	for i := range all {
		if all[i].start <= pc && pc < all[i].end {
			exe = &all[i]
			break
		}
	}
	if exe == nil || exe.inode == 0 {
		return nil, errors.New("no file mapping holds lastcall's own code")
	}
	var out []mapping
	for _, m := range all {
		if m.inode != exe.inode || m.dev != exe.dev || m.path != exe.path {
			continue
		}
		if strings.Contains(m.perms, "w") || !strings.HasSuffix(m.perms, "p") || m.anonymousKB != 0 {
			continue
		}
		out = append(out, m)
	}
	return out, nil
}

// parseSmaps parses /proc/<pid>/smaps: a header line per mapping
// ("start-end perms offset dev inode [path]") followed by "Key: value"
// lines, of which Anonymous is kept.
func parseSmaps(b []byte) ([]mapping, error) {
	var out []mapping
	s := bufio.NewScanner(bytes.NewReader(b))
	s.Buffer(make([]byte, 64<<10), 1<<20)
	for s.Scan() {
		line := s.Text()
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(f[0], ":") {
			if len(out) == 0 {
				return nil, fmt.Errorf("smaps: %q before any mapping", line)
			}
			if f[0] == "Anonymous:" && len(f) >= 2 {
				kb, err := strconv.ParseInt(f[1], 10, 64)
				if err != nil {
					return nil, fmt.Errorf("smaps: %q: %w", line, err)
				}
				out[len(out)-1].anonymousKB = kb
			}
			continue
		}
		if len(f) < 5 {
			return nil, fmt.Errorf("smaps: mapping line %q has %d fields, want at least 5", line, len(f))
		}
		lo, hi, ok := strings.Cut(f[0], "-")
		start, err1 := strconv.ParseUint(lo, 16, 64)
		end, err2 := strconv.ParseUint(hi, 16, 64)
		inode, err3 := strconv.ParseUint(f[4], 10, 64)
		if !ok || err1 != nil || err2 != nil || err3 != nil || end < start {
			return nil, fmt.Errorf("smaps: bad mapping line %q", line)
		}
		m := mapping{start: uintptr(start), end: uintptr(end), perms: f[1], dev: f[3], inode: inode}
		if len(f) > 5 {
			m.path = strings.Join(f[5:], " ")
		}
		out = append(out, m)
	}
	return out, s.Err()
}

// rssFile reads RssFile from /proc/self/status, in bytes.
func rssFile() (int64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "RssFile:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/self/status: RssFile %q: %w", v, err)
			}
			return kb << 10, nil
		}
	}
	return 0, errors.New("/proc/self/status has no RssFile")
}
