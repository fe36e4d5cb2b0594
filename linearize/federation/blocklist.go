package federation

import (
	"errors"
	"fmt"
	"net/netip"
	"syscall"
)

// ErrBlockedAddress is returned for a connection to an address in the configured blocklist.
var ErrBlockedAddress = errors.New("address is in lm.ip_range_blocklist")

// refuseBlocked is a net.Dialer Control function refusing connections to addresses in ranges. It runs for every
// address the dialer tries, after name resolution.
func refuseBlocked(ranges []netip.Prefix) func(network, address string, _ syscall.RawConn) error {
	return func(_, address string, _ syscall.RawConn) error {
		addrPort, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("failed to parse dialled address %q: %w", address, err)
		}
		ip := addrPort.Addr().Unmap()
		for _, r := range ranges {
			if r.Contains(ip) {
				return fmt.Errorf("refusing to connect to %s (in %s): %w", ip, r, ErrBlockedAddress)
			}
		}
		return nil
	}
}
