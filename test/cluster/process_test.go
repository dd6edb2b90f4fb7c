package cluster

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestComponentErrorMarksPortInUse(t *testing.T) {
	for _, tc := range []struct {
		log       string
		portInUse bool
	}{
		{"E0101 failed to listen on 127.0.0.1:20000: listen tcp 127.0.0.1:20000: bind: address already in use", true},
		{"E0101 something else went wrong", false},
	} {
		path := filepath.Join(t.TempDir(), "kube-apiserver.log")
		if err := os.WriteFile(path, []byte("line 1\n"+tc.log+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		err := componentError(&process{name: "kube-apiserver", logPath: path}, errors.New("exited"))
		if got := errors.Is(err, errPortInUse); got != tc.portInUse {
			t.Errorf("log %q: errors.Is(err, errPortInUse) = %v, want %v", tc.log, got, tc.portInUse)
		}
		for _, want := range []string{"starting kube-apiserver: ", "exited", path, tc.log} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q lacks %q", err, want)
			}
		}
	}
}
