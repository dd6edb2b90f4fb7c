package child

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestWaitLine(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("starting\nstill star"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	found := make(chan error, 1)
	go func() {
		_, err := WaitLine(ctx, path, "drain finished")
		found <- err
	}()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	// The line arrives in two writes, split inside the text looked for.
	for _, part := range []string{"ting\nlevel=INFO msg=\"drain fin", "ished\" took=1s\n"} {
		if _, err := f.WriteString(part); err != nil {
			t.Fatal(err)
		}
	}
	if err := <-found; err != nil {
		t.Fatalf("WaitLine: %v", err)
	}
}

func TestWaitLineEndsWithContext(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	if err := os.WriteFile(path, []byte("drain\nfinished\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := WaitLine(ctx, path, "drain finished"); !errors.Is(err, context.Canceled) {
		t.Fatalf("WaitLine after cancel = %v, want context.Canceled (the text spans two lines)", err)
	}
}
