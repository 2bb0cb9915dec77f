package config

import (
	"strconv"
	"testing"
)

func FuzzParse(f *testing.F) {
	f.Add([]byte(example))
	f.Add([]byte("queues:\n  q: {concurrency: 0, command: [a, '{input}']}\n"))
	f.Add([]byte("tokens:\n  - {token: ${T}, owner: o, scopes: [read]}\nlimits: {rate: 10/30s}\n"))
	f.Add([]byte("a: &x [*x]\n"))
	f.Add([]byte("$${"))
	getenv := env("T", "secret", "DOCKET_BURST", "5")
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, getenv)
		if err == nil {
			if err := c.Validate(); err != nil {
				t.Fatalf("Parse accepted a config that Validate rejects: %v", err)
			}
		}
	})
}

func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"0", "1024", "1GiB", "10MB", " 2 kib ", "9223372036854775807", "-1", "1.5GB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := ParseSize(s)
		if err != nil {
			return
		}
		if n < 0 {
			t.Fatalf("ParseSize(%q) = %d", s, n)
		}
		if m, err := ParseSize(strconv.FormatInt(n, 10)); err != nil || m != n {
			t.Fatalf("round trip of %d gave %d, %v", n, m, err)
		}
	})
}
