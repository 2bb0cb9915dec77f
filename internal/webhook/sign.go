package webhook

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Sign returns the Docket-Signature header of body sent at t.
func Sign(secret []byte, t time.Time, body []byte) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + mac(secret, ts, body)
}

func mac(secret []byte, ts string, body []byte) string {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// Errors of Verify.
var (
	ErrSignature = errors.New("webhook: signature mismatch")
	ErrTimestamp = errors.New("webhook: timestamp outside the tolerance")
	ErrHeader    = errors.New("webhook: malformed Docket-Signature header")
)

// Verify checks a Docket-Signature header against the body as received.
// The signed timestamp must be within tolerance of the local clock, so that
// a captured delivery cannot be replayed later; tolerance <= 0 skips that
// check. Several v1 entries are accepted, any one matching, so that a
// receiver keeps working while the secret is being rotated.
func Verify(secret []byte, header string, body []byte, tolerance time.Duration) error {
	var ts string
	var sigs []string
	for _, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return ErrHeader
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			sigs = append(sigs, v)
		}
	}
	if ts == "" || len(sigs) == 0 {
		return ErrHeader
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return ErrHeader
	}
	if tolerance > 0 {
		if d := time.Since(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
			return fmt.Errorf("%w: signed %s ago", ErrTimestamp, d.Round(time.Second))
		}
	}
	want := []byte(mac(secret, ts, body))
	for _, s := range sigs {
		if hmac.Equal([]byte(s), want) {
			return nil
		}
	}
	return ErrSignature
}

// secretFile is where a generated secret is kept, in the data directory.
const secretFile = "webhook_secret"

// LoadSecret returns the signing secret: the configured one if set, else the
// one kept in dir, generated on first use. Keeping it matters: receivers
// are configured with it, and a new one at every start would break them.
func LoadSecret(configured, dir string) ([]byte, error) {
	if configured != "" {
		return []byte(configured), nil
	}
	path := filepath.Join(dir, secretFile)
	if b, err := os.ReadFile(path); err == nil {
		if s := strings.TrimSpace(string(b)); s != "" {
			return []byte(s), nil
		}
		return nil, fmt.Errorf("webhook: %s is empty", path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("webhook: secret: %w", err)
	}
	raw := make([]byte, 32)
	rand.Read(raw)
	s := hex.EncodeToString(raw)
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("webhook: secret: %w", err)
	}
	// O_EXCL: when two processes start at once, one secret wins and the
	// other reads it.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadSecret("", dir)
	}
	if err != nil {
		return nil, fmt.Errorf("webhook: secret: %w", err)
	}
	_, werr := f.WriteString(s + "\n")
	if err := errors.Join(werr, f.Sync(), f.Close()); err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("webhook: secret: %w", err)
	}
	return []byte(s), nil
}
