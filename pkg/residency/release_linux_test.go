package residency

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A static executable (text, read-only data, data), a position-independent
// one whose relocated read-only data holds copied pages, a shared library
// and anonymous memory.
const smapsFixture = `00400000-013c6000 r-xp 00000000 fd:01 4242       /usr/local/bin/lastcall
Size:              16148 kB
Rss:               12000 kB
Anonymous:             0 kB
VmFlags: rd ex mr mw me sd
013c6000-02392000 r--p 00fc6000 fd:01 4242       /usr/local/bin/lastcall
Size:              16176 kB
Anonymous:             0 kB
02392000-02429000 rw-p 01f92000 fd:01 4242       /usr/local/bin/lastcall
Size:                604 kB
Anonymous:           300 kB
02429000-04474000 rw-p 00000000 00:00 0 
Size:              32812 kB
Anonymous:          8000 kB
7f0000000000-7f0000010000 r--p 00010000 fd:01 4242       /usr/local/bin/lastcall
Size:                 64 kB
Anonymous:            64 kB
7f1000000000-7f1000100000 r-xp 00000000 fd:01 777        /lib/libc.so.6
Size:               1024 kB
Anonymous:             0 kB
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0          [stack]
Size:                132 kB
Anonymous:            12 kB
`

func TestReleasable(t *testing.T) {
	ms, err := releasable([]byte(smapsFixture), 0x48ee40)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range ms {
		got = append(got, m.perms)
	}
	// Code and read-only data; not the writable data, not the read-only
	// mapping with pages of the process's own, not libc.
	if len(ms) != 2 || ms[0].start != 0x400000 || ms[1].end != 0x2392000 {
		t.Fatalf("releasable = %+v (%v), want the r-xp and r--p mappings of lastcall", ms, got)
	}
}

func TestReleasableErrors(t *testing.T) {
	for name, tc := range map[string]struct {
		smaps string
		pc    uintptr
		want  string
	}{
		"pc outside every mapping": {smapsFixture, 0x10, "no file mapping holds"},
		"pc in anonymous memory":   {smapsFixture, 0x2429000, "no file mapping holds"},
		"short mapping line":       {"00400000-013c6000 r-xp 00000000\n", 0x400000, "has 3 fields"},
		"bad address":              {"0040zz00-013c6000 r-xp 00000000 fd:01 1 /x\n", 0x400000, "bad mapping line"},
		"end before start":         {"00500000-00400000 r-xp 00000000 fd:01 1 /x\n", 0x400000, "bad mapping line"},
		"field before mapping":     {"Anonymous: 0 kB\n", 0x400000, "before any mapping"},
		"bad anonymous":            {"00400000-013c6000 r-xp 00000000 fd:01 1 /x\nAnonymous: lots kB\n", 0x400000, "Anonymous: lots"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := releasable([]byte(tc.smaps), tc.pc)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestRelease releases this test binary's own pages and goes on running:
// the code it runs next faults back in from the page cache.
func TestRelease(t *testing.T) {
	r, err := Release()
	if err != nil {
		t.Fatal(err)
	}
	if r.Mappings < 2 || r.Bytes <= 0 {
		t.Fatalf("released %d mappings, %d bytes; want the code and read-only data at least", r.Mappings, r.Bytes)
	}
	if r.FileBefore <= 0 || r.FileAfter >= r.FileBefore {
		t.Fatalf("RssFile %d bytes before, %d after: want it to drop", r.FileBefore, r.FileAfter)
	}
	// Still sound: run it again.
	if _, err := Release(); err != nil {
		t.Fatal(err)
	}
	t.Logf("released %d mappings (%d MiB); RssFile %.1f → %.1f MiB", r.Mappings, r.Bytes>>20,
		float64(r.FileBefore)/(1<<20), float64(r.FileAfter)/(1<<20))
}

// TestReleasePIE builds a position-independent executable, whose relocated
// read-only data is a mapping of the binary holding pages of the process's
// own, and runs it: it releases its pages and then uses that data.
// Releasing that mapping too would crash it.
func TestReleasePIE(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to build the PIE: %v", err)
	}
	bin := filepath.Join(t.TempDir(), "pie")
	build := exec.Command(goTool, "build", "-buildmode=pie", "-o", bin, "./testdata/pie")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build -buildmode=pie: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("the PIE failed after releasing its pages: %v\n%s", err, out)
	}
	// It prints how many mappings it released, then what it computed.
	n, rest, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	if n == "0" || n == "1" || rest != "x [1 2 3] tags 2" {
		t.Fatalf("the PIE printed %q, want at least 2 mappings released and \"x [1 2 3] tags 2\"", out)
	}
}
