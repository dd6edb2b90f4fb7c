package child

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"time"
)

// followInterval is how often WaitLine reads a log for new output.
const followInterval = 5 * time.Millisecond

// WaitLine follows the file at path from its start until a line contains
// s, and returns when that line was read: within 5 ms of a process
// appending it. It returns an error if ctx ends first.
func WaitLine(ctx context.Context, path, s string) (time.Time, error) {
	f, err := os.Open(path)
	if err != nil {
		return time.Time{}, err
	}
	defer f.Close()
	want := []byte(s)
	var line []byte // what was read since the last newline
	buf := make([]byte, 64<<10)
	ticker := time.NewTicker(followInterval)
	defer ticker.Stop()
	for {
		for {
			n, err := f.Read(buf)
			if n > 0 {
				line = append(line, buf[:n]...)
				if bytes.Contains(line, want) {
					return time.Now(), nil
				}
				if i := bytes.LastIndexByte(line, '\n'); i >= 0 {
					line = append(line[:0], line[i+1:]...)
				}
			}
			if err == io.EOF || n == 0 {
				break
			}
			if err != nil {
				return time.Time{}, err
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, fmt.Errorf("waiting for %q in %s: %w", s, path, ctx.Err())
		case <-ticker.C:
		}
	}
}
