package child

import (
	"bufio"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Ports are picked at random from [portFloor, start of the kernel's
// ephemeral range), so that outgoing connections, which take ephemeral
// ports, cannot take them between the pick and the bind.
const (
	portFloor          = 10000
	ephemeralRangeFile = "/proc/sys/net/ipv4/ip_local_port_range"
	defaultEphemeral   = 32768
	portTries          = 200
)

// FreePorts returns n distinct TCP ports that were free on Localhost a
// moment ago. All listeners stay open until every port is picked, so the
// ports differ from each other. Another process may still bind one before
// its user does: see Start's check.
func FreePorts(n int) ([]int, error) {
	ceiling := EphemeralStart()
	ports := make([]int, 0, n)
	for try := 0; len(ports) < n; try++ {
		port := 0 // let the kernel choose, if no room below the ephemeral range
		if ceiling-portFloor > 1000 && try < portTries {
			port = portFloor + mrand.IntN(ceiling-portFloor)
		}
		l, err := net.Listen("tcp", net.JoinHostPort(Localhost, strconv.Itoa(port)))
		if err != nil {
			if port == 0 {
				return nil, fmt.Errorf("picking a free port: %w", err)
			}
			continue
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// FreePort returns one port as FreePorts does.
func FreePort() (int, error) {
	ports, err := FreePorts(1)
	if err != nil {
		return 0, err
	}
	return ports[0], nil
}

// EphemeralStart returns the first port of the kernel's ephemeral range.
func EphemeralStart() int {
	b, err := os.ReadFile(ephemeralRangeFile)
	if err != nil {
		return defaultEphemeral
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return defaultEphemeral
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return defaultEphemeral
	}
	return low
}

// listenerOwned reports whether the TCP listener on port belongs to a
// process of process group pgid: a server that lost the race for its port
// exits, and the answer to its readiness check came from another program.
// Where /proc cannot tell (not Linux), it reports true.
func listenerOwned(port, pgid int) (bool, error) {
	inodes, err := listeningInodes(port)
	if err != nil || len(inodes) == 0 {
		return err == nil && len(inodes) == 0 && !procAvailable(), err
	}
	procs, err := filepath.Glob("/proc/[0-9]*")
	if err != nil {
		return false, err
	}
	for _, dir := range procs {
		if groupOf(dir) != pgid {
			continue
		}
		fds, _ := filepath.Glob(filepath.Join(dir, "fd", "*"))
		for _, fd := range fds {
			if link, err := os.Readlink(fd); err == nil && inodes[link] {
				return true, nil
			}
		}
	}
	return false, nil
}

func procAvailable() bool {
	_, err := os.Stat("/proc/net/tcp")
	return err == nil
}

// listeningInodes returns the sockets (as "socket:[inode]") listening on
// port, from /proc/net/tcp and tcp6.
func listeningInodes(port int) (map[string]bool, error) {
	out := map[string]bool{}
	for _, table := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		f, err := os.Open(table)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			// sl local_address rem_address st ... inode (field 9)
			if len(fields) < 10 || fields[3] != "0A" {
				continue
			}
			_, hexPort, ok := strings.Cut(fields[1], ":")
			if p, err := strconv.ParseInt(hexPort, 16, 32); !ok || err != nil || int(p) != port {
				continue
			}
			out["socket:["+fields[9]+"]"] = true
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// groupOf is the process group of the process whose /proc directory is
// dir, or -1.
func groupOf(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, "stat"))
	if err != nil {
		return -1
	}
	// pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	fields := strings.Fields(s[i+1:])
	if len(fields) < 3 {
		return -1
	}
	pgrp, err := strconv.Atoi(fields[2])
	if err != nil {
		return -1
	}
	return pgrp
}
