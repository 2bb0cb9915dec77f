package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// opt records whether a key was present, and on which line, so that defaults
// apply only to absent keys (an explicit 0 is a real value) and errors can
// point at the file. Use it only for scalars and lists of scalars: it decodes
// through yaml.Node.Decode, which does not reject unknown keys.
type opt[T any] struct {
	V    T
	Set  bool
	Line int
}

// UnmarshalYAML implements yaml.Unmarshaler. It is not called for null
// values, so "key: ~" counts as absent.
func (o *opt[T]) UnmarshalYAML(n *yaml.Node) error {
	o.Set, o.Line = true, n.Line
	return n.Decode(&o.V)
}

// rawConfig mirrors the file layout. Sizes, rates and durations stay strings
// here so that their errors can name the key and line.
type rawConfig struct {
	Listen     opt[string]         `yaml:"listen"`
	DataDir    opt[string]         `yaml:"data_dir"`
	Store      opt[string]         `yaml:"store"`
	SQLiteSync opt[string]         `yaml:"sqlite_sync"`
	Lease      opt[string]         `yaml:"lease"`
	Tokens     []rawToken          `yaml:"tokens"`
	Limits     rawLimits           `yaml:"limits"`
	Queues     map[string]rawQueue `yaml:"queues"`
	Apps       opt[[]string]       `yaml:"apps"`
	Upstreams  []rawUpstream       `yaml:"upstreams"`

	WebhookSecret       opt[string] `yaml:"webhook_secret"`
	WebhookAllowPrivate opt[bool]   `yaml:"webhook_allow_private"`
	WebhookMaxAttempts  opt[int]    `yaml:"webhook_max_attempts"`
	WebhookMaxAge       opt[string] `yaml:"webhook_max_age"`
}

type rawToken struct {
	Token  opt[string] `yaml:"token"`
	SHA256 opt[string] `yaml:"sha256"`
	Owner  string      `yaml:"owner"`
	Scopes []string    `yaml:"scopes"`
}

type rawLimits struct {
	MaxBody opt[string] `yaml:"max_body"`
	Rate    opt[string] `yaml:"rate"`
	Burst   opt[int]    `yaml:"burst"`
}

type rawQueue struct {
	Concurrency opt[int]      `yaml:"concurrency"`
	MaxQueued   opt[int]      `yaml:"max_queued"`
	Timeout     opt[string]   `yaml:"timeout"`
	MaxAttempts opt[int]      `yaml:"max_attempts"`
	Retention   opt[string]   `yaml:"retention"`
	Command     opt[[]string] `yaml:"command"`
	ResultType  opt[string]   `yaml:"result_type"`
	Paused      opt[bool]     `yaml:"paused"`
	Prefetch    opt[int]      `yaml:"prefetch"`
}

// decode parses the YAML text and applies defaults; it does not validate.
func decode(data []byte) (Config, error) {
	var raw rawConfig
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil && err != io.EOF {
		return Config{}, yamlError(err)
	}
	if err := dec.Decode(new(yaml.Node)); err != io.EOF {
		// A second document would otherwise be silently ignored.
		return Config{}, errors.New("config must be a single YAML document")
	}
	return raw.config()
}

// yamlError rewrites the decoder's "field x not found in type config.rawQueue"
// into wording that speaks of the file, not of Go types.
func yamlError(err error) error {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err
	}
	errs := make([]error, len(te.Errors))
	for i, msg := range te.Errors {
		if head, rest, ok := strings.Cut(msg, "field "); ok {
			if name, _, ok := strings.Cut(rest, " not found in type "); ok {
				msg = fmt.Sprintf("%sunknown key %q", head, name)
			}
		}
		errs[i] = errors.New(msg)
	}
	return errors.Join(errs...)
}

// at prefixes err with the line (when known) and key it came from.
func at(line int, key string, err error) error {
	if line > 0 {
		return fmt.Errorf("line %d: %s: %w", line, key, err)
	}
	return fmt.Errorf("%s: %w", key, err)
}

func (r rawConfig) config() (Config, error) {
	c := Default()
	var errs []error
	setValue(&c.Listen, r.Listen)
	setValue(&c.DataDir, r.DataDir)
	setValue(&c.Store, r.Store)
	setValue(&c.SQLiteSync, r.SQLiteSync)

	if r.Limits.MaxBody.Set {
		n, err := ParseSize(r.Limits.MaxBody.V)
		if err != nil {
			errs = append(errs, at(r.Limits.MaxBody.Line, "limits.max_body", err))
		}
		c.Limits.MaxBody = n
	}
	if r.Limits.Rate.Set {
		n, err := ParseRate(r.Limits.Rate.V)
		if err != nil {
			errs = append(errs, at(r.Limits.Rate.Line, "limits.rate", err))
		}
		c.Limits.Rate = n
	}
	setValue(&c.Limits.Burst, r.Limits.Burst)
	setValue(&c.Apps, r.Apps)
	setValue(&c.Webhooks.Secret, r.WebhookSecret)
	setValue(&c.Webhooks.AllowPrivate, r.WebhookAllowPrivate)
	setValue(&c.Webhooks.MaxAttempts, r.WebhookMaxAttempts)
	if r.Lease.Set {
		d, err := time.ParseDuration(r.Lease.V)
		if err != nil {
			errs = append(errs, at(r.Lease.Line, "lease", err))
		}
		c.Lease = d
	}
	if r.WebhookMaxAge.Set {
		d, err := time.ParseDuration(r.WebhookMaxAge.V)
		if err != nil {
			errs = append(errs, at(r.WebhookMaxAge.Line, "webhook_max_age", err))
		}
		c.Webhooks.MaxAge = d
	}

	for i, rt := range r.Tokens {
		t, err := rt.token()
		if err != nil {
			errs = append(errs, at(max(rt.Token.Line, rt.SHA256.Line), fmt.Sprintf("tokens[%d]", i), err))
		}
		c.Tokens = append(c.Tokens, t)
	}

	for i, ru := range r.Upstreams {
		u, err := ru.upstream(i)
		errs = append(errs, err)
		c.Upstreams = append(c.Upstreams, u)
	}

	for _, name := range slices.Sorted(maps.Keys(r.Queues)) {
		q, err := r.Queues[name].queue("queues." + name)
		errs = append(errs, err)
		c.Queues[name] = q
	}
	return c, errors.Join(errs...)
}

func setValue[T any](dst *T, o opt[T]) {
	if o.Set {
		*dst = o.V
	}
}

func (rt rawToken) token() (Token, error) {
	t := Token{Owner: rt.Owner, Scopes: rt.Scopes}
	switch {
	case rt.Token.Set && rt.SHA256.Set:
		return t, errors.New("set only one of token and sha256")
	case rt.Token.Set:
		if rt.Token.V == "" {
			// Usually a ${VAR} whose variable is not set.
			return t, errors.New("token is empty")
		}
		t.Hash = sha256.Sum256([]byte(rt.Token.V))
	case rt.SHA256.Set:
		b, err := hex.DecodeString(rt.SHA256.V)
		if err != nil || len(b) != len(t.Hash) {
			return t, fmt.Errorf("sha256 must be 64 hexadecimal characters, got %q", rt.SHA256.V)
		}
		copy(t.Hash[:], b)
	default:
		return t, errors.New("needs a token or a sha256")
	}
	return t, nil
}

func (rq rawQueue) queue(key string) (Queue, error) {
	q := DefaultQueue()
	var errs []error
	setValue(&q.Concurrency, rq.Concurrency)
	setValue(&q.MaxQueued, rq.MaxQueued)
	setValue(&q.MaxAttempts, rq.MaxAttempts)
	setValue(&q.ResultType, rq.ResultType)
	setValue(&q.Paused, rq.Paused)
	setValue(&q.Prefetch, rq.Prefetch)
	for _, d := range []struct {
		dst  *time.Duration
		src  opt[string]
		name string
	}{{&q.Timeout, rq.Timeout, "timeout"}, {&q.Retention, rq.Retention, "retention"}} {
		if !d.src.Set {
			continue
		}
		v, err := time.ParseDuration(d.src.V)
		if err != nil {
			errs = append(errs, at(d.src.Line, key+"."+d.name, err))
		}
		*d.dst = v
	}
	if rq.Command.Set {
		if len(rq.Command.V) == 0 {
			errs = append(errs, at(rq.Command.Line, key+".command", errors.New("must not be empty")))
		}
		q.Command = rq.Command.V
	}
	return q, errors.Join(errs...)
}

// applyEnv lets DOCKET_* variables override the file. An empty variable is
// treated as unset, since getenv cannot tell the two apart.
func applyEnv(c *Config, getenv func(string) string) error {
	for name, dst := range map[string]*string{
		"DOCKET_LISTEN":      &c.Listen,
		"DOCKET_DATA_DIR":    &c.DataDir,
		"DOCKET_STORE":       &c.Store,
		"DOCKET_SQLITE_SYNC": &c.SQLiteSync,
		// The secret is better kept out of the file.
		"DOCKET_WEBHOOK_SECRET": &c.Webhooks.Secret,
	} {
		if v := getenv(name); v != "" {
			*dst = v
		}
	}
	var errs []error
	if v := getenv("DOCKET_MAX_BODY"); v != "" {
		n, err := ParseSize(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_MAX_BODY: %w", err))
		}
		c.Limits.MaxBody = n
	}
	if v := getenv("DOCKET_RATE"); v != "" {
		n, err := ParseRate(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_RATE: %w", err))
		}
		c.Limits.Rate = n
	}
	if v := getenv("DOCKET_TOKENS"); v != "" {
		// Tokens from the environment alone, without a file: entries
		// "owner:scope+scope:token" separated by spaces or commas.
		for _, entry := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
			owner, rest, ok1 := strings.Cut(entry, ":")
			scopes, tok, ok2 := strings.Cut(rest, ":")
			if !ok1 || !ok2 || owner == "" || scopes == "" || tok == "" {
				errs = append(errs, fmt.Errorf("DOCKET_TOKENS: entry for owner %q: want owner:scope+scope:token", owner))
				continue
			}
			c.Tokens = append(c.Tokens, Token{Owner: owner, Scopes: strings.Split(scopes, "+"), Hash: sha256.Sum256([]byte(tok))})
		}
	}
	if v := getenv("DOCKET_APPS"); v != "" {
		c.Apps = SplitList(v)
	}
	if v := getenv("DOCKET_WEBHOOK_ALLOW_PRIVATE"); v != "" {
		b, err := strconv.ParseBool(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_WEBHOOK_ALLOW_PRIVATE: %w", err))
		}
		c.Webhooks.AllowPrivate = b
	}
	if v := getenv("DOCKET_WEBHOOK_MAX_ATTEMPTS"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_WEBHOOK_MAX_ATTEMPTS: %w", err))
		}
		c.Webhooks.MaxAttempts = n
	}
	if v := getenv("DOCKET_WEBHOOK_MAX_AGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_WEBHOOK_MAX_AGE: %w", err))
		}
		c.Webhooks.MaxAge = d
	}
	if v := getenv("DOCKET_LEASE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_LEASE: %w", err))
		}
		c.Lease = d
	}
	if v := getenv("DOCKET_BURST"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("DOCKET_BURST: %w", err))
		}
		c.Limits.Burst = n
	}
	return errors.Join(errs...)
}

// SplitList splits a list given as one string ("pdf", "a,b", "a b") into
// its non-empty items.
func SplitList(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' })
}

// expand replaces ${NAME} with getenv(NAME) and $$ with $. Any other $ is
// kept, so "$1" or "$HOME" in a shell command reaches the shell untouched.
func expand(s string, getenv func(string) string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '$' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		switch s[i+1] {
		case '$':
			b.WriteByte('$')
			i++
		case '{':
			end := strings.IndexByte(s[i+2:], '}')
			line := 1 + strings.Count(s[:i], "\n")
			if end < 0 {
				return "", fmt.Errorf("line %d: unterminated ${ (write $$ for a literal $)", line)
			}
			name := s[i+2 : i+2+end]
			if !validEnvName(name) {
				return "", fmt.Errorf("line %d: invalid variable name %q in ${...}", line, name)
			}
			b.WriteString(getenv(name))
			i += 2 + end
		default:
			b.WriteByte('$')
		}
	}
	return b.String(), nil
}

func validEnvName(name string) bool {
	if name == "" || '0' <= name[0] && name[0] <= '9' {
		return false
	}
	for _, r := range name {
		if !('a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9' || r == '_') {
			return false
		}
	}
	return true
}
