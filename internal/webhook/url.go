package webhook

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"syscall"
)

// The events a webhook can ask for.
const (
	EventStarted   = "started"   // the job first ran
	EventProgress  = "progress"  // a running job reported progress or began another attempt
	EventCompleted = "completed" // succeeded
	EventFailed    = "failed"    // failed for good, attempts exhausted
	EventCanceled  = "canceled"
)

// Events lists every event; DefaultEvents are those of a webhook that names
// none: the ends of a job, which is what most receivers wait for.
var (
	Events        = []string{EventStarted, EventProgress, EventCompleted, EventFailed, EventCanceled}
	DefaultEvents = []string{EventCompleted, EventFailed, EventCanceled}
)

// MaxURL bounds a webhook URL.
const MaxURL = 2048

// ParseEvents reads a comma-separated list of event names.
func ParseEvents(s string) ([]string, error) {
	var out []string
	for _, name := range strings.Split(s, ",") {
		name = strings.TrimSpace(name)
		if !slices.Contains(Events, name) {
			return nil, fmt.Errorf("unknown event %q (want %s)", name, strings.Join(Events, ", "))
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out, nil
}

// CheckURL refuses a webhook URL docket will not call: anything but an
// absolute http or https URL with a host. Where the host points is checked
// at each delivery, on the address actually dialed.
func CheckURL(raw string) error {
	if len(raw) > MaxURL {
		return fmt.Errorf("longer than %d characters", MaxURL)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return err
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("scheme %q: only http and https URLs are called", u.Scheme)
	}
	if u.Hostname() == "" {
		return errors.New("no host")
	}
	if u.User != nil {
		// It would be logged and stored in the clear; put credentials in
		// the path or query, or rely on the signature.
		return errors.New("user information is not allowed in the URL")
	}
	return nil
}

// RefusedError is the failure of a delivery to an address docket does not
// call unless allowed.
type RefusedError struct {
	Addr   netip.Addr
	Reason string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("address %s is %s: refused (set webhook_allow_private to allow it)", e.Addr, e.Reason)
}

var extraBlocked = []struct {
	p      netip.Prefix
	reason string
}{
	{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared (carrier-grade NAT)"},
	{netip.MustParsePrefix("255.255.255.255/32"), "broadcast"},
	{netip.MustParsePrefix("64:ff9b::/96"), "NAT64, which may reach a private IPv4 address"},
}

// blocked says why addr must not be called, or "" when it may be.
func blocked(addr netip.Addr) string {
	addr = addr.Unmap()
	switch {
	case addr.IsLoopback():
		return "loopback"
	case addr.IsPrivate():
		return "private"
	case addr.IsLinkLocalUnicast(), addr.IsLinkLocalMulticast():
		return "link-local"
	case addr.IsUnspecified():
		return "unspecified"
	case addr.IsMulticast():
		return "multicast"
	}
	for _, b := range extraBlocked {
		if b.p.Contains(addr) {
			return b.reason
		}
	}
	return ""
}

// control is the dialer's Control hook: it sees the address being
// connected to after name resolution, so a host name that resolves to a
// public address when checked and a private one when dialed (DNS rebinding)
// is still refused.
func control(network, address string, _ syscall.RawConn) error {
	host, _, err := net.SplitHostPort(address)
	if err != nil {
		return err
	}
	addr, err := netip.ParseAddr(host)
	if err != nil {
		return fmt.Errorf("webhook: dialing %q: %w", address, err)
	}
	if why := blocked(addr); why != "" {
		return &RefusedError{Addr: addr, Reason: why}
	}
	return nil
}
