package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

var sizeUnits = map[string]int64{
	"": 1, "b": 1,
	"kb": 1e3, "mb": 1e6, "gb": 1e9, "tb": 1e12,
	"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40,
}

// ParseSize parses a byte count such as "1024", "10MB" or "1GiB". Units are
// case-insensitive; KB, MB, GB and TB are powers of 1000 and KiB, MiB, GiB
// and TiB powers of 1024, so that both disk-style and memory-style sizes can
// be written exactly. Only whole numbers are accepted.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && '0' <= t[i] && t[i] <= '9' {
		i++
	}
	mult, ok := sizeUnits[strings.ToLower(strings.TrimSpace(t[i:]))]
	if i == 0 || !ok {
		return 0, fmt.Errorf("invalid size %q: want whole bytes with an optional unit B, KB, MB, GB, KiB, MiB or GiB", s)
	}
	n, err := strconv.ParseInt(t[:i], 10, 64)
	if err != nil || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("invalid size %q: too large", s)
	}
	return n * mult, nil
}

// ParseRate parses a rate such as "60/m", "5/s", "100/h" or "10/30s" into
// events per second. "0" alone means unlimited; a zero count with a period
// ("0/m") is refused because it reads as "nothing allowed", the opposite.
func ParseRate(s string) (float64, error) {
	t := strings.TrimSpace(s)
	if t == "0" {
		return 0, nil
	}
	count, period, ok := strings.Cut(t, "/")
	if !ok {
		return 0, fmt.Errorf("invalid rate %q: want N/s, N/m, N/h or N/<duration> such as 10/30s, or 0 for no limit", s)
	}
	n, err := strconv.ParseFloat(strings.TrimSpace(count), 64)
	if err != nil || !(n > 0) || math.IsInf(n, 0) {
		return 0, fmt.Errorf("invalid rate %q: count must be a positive number (write 0 alone for no limit)", s)
	}
	var d time.Duration
	switch period = strings.TrimSpace(period); period {
	case "s":
		d = time.Second
	case "m":
		d = time.Minute
	case "h":
		d = time.Hour
	default:
		d, err = time.ParseDuration(period)
		if err != nil || d <= 0 {
			return 0, fmt.Errorf("invalid rate %q: period must be s, m, h or a positive duration", s)
		}
	}
	r := n / d.Seconds()
	if !(r > 0) || math.IsInf(r, 0) {
		// Rounding to 0 would silently mean "unlimited".
		return 0, fmt.Errorf("invalid rate %q: out of range", s)
	}
	return r, nil
}
