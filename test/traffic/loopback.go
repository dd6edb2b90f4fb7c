package traffic

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"time"
)

// loopback is the only network this package listens on or dials.
var loopback = netip.MustParsePrefix("127.0.0.0/8")

// LoopbackError says an address is not an IP of 127.0.0.0/8.
type LoopbackError struct {
	// Address is the address refused.
	Address string
}

func (e *LoopbackError) Error() string {
	return fmt.Sprintf("%q is not an IP address in %s", e.Address, loopback)
}

// checkLoopback returns a *LoopbackError unless host is an IP of
// 127.0.0.0/8. Names (localhost included) are refused: they are resolved
// outside this package's control.
func checkLoopback(host string) error {
	addr, err := netip.ParseAddr(host)
	if err != nil || !loopback.Contains(addr.Unmap()) {
		return &LoopbackError{Address: host}
	}
	return nil
}

// checkLoopbackURL parses an http URL whose host is an IP of 127.0.0.0/8.
func checkLoopbackURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("parsing the URL: %w", err)
	}
	if u.Scheme != "http" {
		return nil, fmt.Errorf("URL %q: scheme %q is not http", raw, u.Scheme)
	}
	if err := checkLoopback(u.Hostname()); err != nil {
		return nil, fmt.Errorf("URL %q: %w", raw, err)
	}
	return u, nil
}

// dialLoopback dials TCP to a host:port whose host is an IP of
// 127.0.0.0/8, and refuses any other address without sending a packet.
func dialLoopback(dialer *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("dialling %q: %w", addr, err)
		}
		if err := checkLoopback(host); err != nil {
			return nil, fmt.Errorf("dialling %q: %w", addr, err)
		}
		return dialer.DialContext(ctx, network, addr)
	}
}

// defaultDialer is the dialer of both the load generator and the balancers.
func defaultDialer() *net.Dialer {
	return &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}
}
