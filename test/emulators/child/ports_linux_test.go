package child

import (
	"net"
	"os"
	"os/exec"
	"syscall"
	"testing"
)

// A listener belongs to the process group that opened it, and not to
// another: the check that catches a server answering on a port another
// server lost.
func TestListenerOwned(t *testing.T) {
	if !procAvailable() {
		t.Skip("no /proc/net/tcp")
	}
	l, err := net.Listen("tcp", net.JoinHostPort(Localhost, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	if owned, err := listenerOwned(port, syscall.Getpgrp()); err != nil || !owned {
		t.Errorf("own listener: owned %v, %v; want true", owned, err)
	}
	// A process group of its own, holding no socket.
	cmd := exec.Command("sleep", "30")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	if owned, err := listenerOwned(port, cmd.Process.Pid); err != nil || owned {
		t.Errorf("another group's view of this listener: owned %v, %v; want false", owned, err)
	}
	if owned, err := listenerOwned(1, os.Getpid()); err != nil || owned {
		t.Errorf("port 1 (nothing listens): owned %v, %v; want false", owned, err)
	}
}
