package podrun

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// preStopSleep returns how long the preStop hook of the pod's first
// container sleeps: its sleep action, or an exec of "sleep N" or of
// sh -c "sleep N" (N in seconds, a decimal allowed, or infinity). ok is false if there is
// no hook; err says why a hook is not understood.
func preStopSleep(pod *corev1.Pod) (d time.Duration, ok bool, err error) {
	if len(pod.Spec.Containers) == 0 {
		return 0, false, nil
	}
	lc := pod.Spec.Containers[0].Lifecycle
	if lc == nil || lc.PreStop == nil {
		return 0, false, nil
	}
	h := lc.PreStop
	switch {
	case h.Sleep != nil:
		return time.Duration(h.Sleep.Seconds) * time.Second, true, nil
	case h.Exec != nil:
		d, err := execSleep(h.Exec.Command)
		return d, err == nil, err
	default:
		return 0, false, fmt.Errorf("preStop hook %+v: only sleep and exec of sleep are run", *h)
	}
}

// execSleep parses ["sleep", "N"] and ["sh", "-c", "sleep N"] (any shell
// path ending in sh).
func execSleep(cmd []string) (time.Duration, error) {
	args := cmd
	if len(cmd) == 3 && strings.HasSuffix(cmd[0], "sh") && cmd[1] == "-c" {
		args = strings.Fields(cmd[2])
	}
	if len(args) != 2 || (args[0] != "sleep" && !strings.HasSuffix(args[0], "/sleep")) {
		return 0, fmt.Errorf("preStop exec %q: only sleep N is run", cmd)
	}
	if args[1] == "infinity" {
		return time.Duration(math.MaxInt64), nil // cut short by the grace period
	}
	secs, err := strconv.ParseFloat(args[1], 64)
	if err != nil || secs < 0 || math.IsInf(secs, 0) || math.IsNaN(secs) {
		return 0, fmt.Errorf("preStop exec %q: %q is not a number of seconds", cmd, args[1])
	}
	return time.Duration(secs * float64(time.Second)), nil
}
