package webhook

import (
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestSignVerify(t *testing.T) {
	secret, body := []byte("s3cret"), []byte(`{"id":"x"}`)
	now := time.Now()
	h := Sign(secret, now, body)
	if !strings.HasPrefix(h, "t="+strconv.FormatInt(now.Unix(), 10)+",v1=") {
		t.Fatalf("header %q", h)
	}
	if err := Verify(secret, h, body, 5*time.Minute); err != nil {
		t.Fatalf("Verify of a fresh signature: %v", err)
	}
	for name, tc := range map[string]struct {
		secret []byte
		header string
		body   []byte
		want   error
	}{
		"tampered body":   {secret, h, []byte(`{"id":"y"}`), ErrSignature},
		"wrong secret":    {[]byte("other"), h, body, ErrSignature},
		"old":             {secret, Sign(secret, now.Add(-time.Hour), body), body, ErrTimestamp},
		"future":          {secret, Sign(secret, now.Add(time.Hour), body), body, ErrTimestamp},
		"no signature":    {secret, "t=1", body, ErrHeader},
		"no timestamp":    {secret, "v1=ab", body, ErrHeader},
		"garbage":         {secret, "nonsense", body, ErrHeader},
		"bad timestamp":   {secret, "t=x,v1=ab", body, ErrHeader},
		"changed time":    {secret, strings.Replace(h, "t=", "t=1", 1), body, ErrTimestamp},
		"empty":           {secret, "", body, ErrHeader},
		"signature of ''": {secret, Sign(secret, now, nil), body, ErrSignature},
	} {
		if err := Verify(tc.secret, tc.header, tc.body, 5*time.Minute); !errors.Is(err, tc.want) {
			t.Errorf("%s: Verify = %v, want %v", name, err, tc.want)
		}
	}
	// Rotation: any v1 may match; no tolerance: any age.
	old := Sign(secret, now.Add(-time.Hour), body)
	rotated := old + ",v1=" + strings.Repeat("0", 64)
	if err := Verify(secret, rotated, body, 0); err != nil {
		t.Errorf("two v1, tolerance 0: %v", err)
	}
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	if s, err := LoadSecret("configured", dir); err != nil || string(s) != "configured" {
		t.Fatalf("configured: %q, %v", s, err)
	}
	if _, err := os.Stat(filepath.Join(dir, secretFile)); !os.IsNotExist(err) {
		t.Fatalf("a configured secret wrote a file: %v", err)
	}
	a, err := LoadSecret("", dir)
	if err != nil || len(a) != 64 {
		t.Fatalf("generated: %q, %v", a, err)
	}
	b, err := LoadSecret("", dir)
	if err != nil || string(a) != string(b) {
		t.Fatalf("second start: %q, %v; want %q", b, err, a)
	}
	fi, err := os.Stat(filepath.Join(dir, secretFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file: %v, %v", fi, err)
	}
	if c, _ := LoadSecret("", t.TempDir()); string(c) == string(a) {
		t.Error("two data directories share a secret")
	}
}

func TestCheckURL(t *testing.T) {
	for _, ok := range []string{"http://example.com/hook", "https://example.com:8443/a?b=c", "http://127.0.0.1:9/x"} {
		if err := CheckURL(ok); err != nil {
			t.Errorf("CheckURL(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"file:///etc/passwd", "ftp://example.com/", "gopher://x", "/relative", "example.com/hook",
		"http://", "https://user:pw@example.com/", "http://example.com/" + strings.Repeat("a", MaxURL), "javascript:alert(1)"} {
		if err := CheckURL(bad); err == nil {
			t.Errorf("CheckURL(%q) accepted it", bad)
		}
	}
}

func TestParseEvents(t *testing.T) {
	got, err := ParseEvents("completed, failed,completed")
	if err != nil || strings.Join(got, ",") != "completed,failed" {
		t.Errorf("ParseEvents = %v, %v", got, err)
	}
	for _, bad := range []string{"", "done", "completed,,failed", "COMPLETED"} {
		if _, err := ParseEvents(bad); err == nil {
			t.Errorf("ParseEvents(%q) accepted it", bad)
		}
	}
}

func TestBlocked(t *testing.T) {
	for addr, want := range map[string]string{
		"127.0.0.1": "loopback", "::1": "loopback", "10.1.2.3": "private", "172.16.0.1": "private",
		"172.31.255.255": "private", "192.168.1.1": "private", "fc00::1": "private", "fd12::1": "private",
		"169.254.169.254": "link-local", "fe80::1": "link-local", "0.0.0.0": "unspecified", "::": "unspecified",
		"224.0.0.1": "link-local", "239.1.2.3": "multicast", "ff02::1": "link-local", "ff05::1": "multicast", "::ffff:127.0.0.1": "loopback",
		"::ffff:10.0.0.1": "private", "100.64.0.1": "shared (carrier-grade NAT)", "0.1.2.3": "unspecified",
		"8.8.8.8": "", "2001:4860:4860::8888": "", "172.32.0.1": "", "93.184.216.34": "",
	} {
		if got := blocked(netip.MustParseAddr(addr)); got != want {
			t.Errorf("blocked(%s) = %q, want %q", addr, got, want)
		}
	}
	if err := control("tcp", "127.0.0.1:80", nil); err == nil {
		t.Error("control let 127.0.0.1 through")
	} else if re := (*RefusedError)(nil); !errors.As(err, &re) || !strings.Contains(err.Error(), "loopback") {
		t.Errorf("control error %v", err)
	}
	if err := control("tcp", "[fe80::1%eth0]:80", nil); err == nil {
		t.Error("control let a zoned link-local address through")
	}
	if err := control("tcp", "8.8.8.8:443", nil); err != nil {
		t.Errorf("control refused a public address: %v", err)
	}
}
