package child

import (
	"os"
	"syscall"
)

// sysProcAttr starts the child in a process group of its own. Windows has
// no parent-death signal: a child outlives a test binary that is killed.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{CreationFlags: syscall.CREATE_NEW_PROCESS_GROUP}
}

// killGroup terminates p (TerminateProcess); its own children, if any,
// are not reached.
func killGroup(p *os.Process) error {
	return p.Kill()
}
