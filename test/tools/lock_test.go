package tools

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The cache lock is exclusive between two opens of the file, as between
// two test binaries, and the waiter gets it once it is released.
func TestLockFileWaitsForTheHolder(t *testing.T) {
	path := filepath.Join(t.TempDir(), ".lock")
	open := func() *os.File {
		f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	holder, waiter := open(), open()
	if err := lockFile(holder); err != nil {
		t.Fatal(err)
	}
	locked := make(chan error, 1)
	go func() { locked <- lockFile(waiter) }()
	select {
	case err := <-locked:
		t.Fatalf("second lock taken while the first is held (%v)", err)
	case <-time.After(200 * time.Millisecond):
	}
	if err := unlockFile(holder); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-locked:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("second lock not taken after the first was released")
	}
	if err := unlockFile(waiter); err != nil {
		t.Fatal(err)
	}
}
