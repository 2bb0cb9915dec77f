// Package config loads docket's YAML configuration file. It produces a fully
// defaulted, validated Config so the rest of docket never has to guess what a
// missing key means or re-check a value.
//
// The order of precedence, lowest first, is: built-in defaults, the file,
// DOCKET_* environment variables, then command-line flags. Flags belong to the
// caller: it sets fields on the Config returned by Load and calls Validate
// again.
package config

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"mime"
	"os"
	"slices"
	"strings"
	"time"
)

// Config is the whole server configuration after defaults, environment
// overrides and validation have been applied.
type Config struct {
	// Listen is the HTTP listen address, host:port.
	Listen string
	// DataDir holds the SQLite file, blobs and temporary files.
	DataDir string
	// Store is "sqlite" or a postgres:// URL.
	Store string
	// SQLiteSync is "normal" (survives a process crash) or "full" (also
	// survives power loss, at the cost of an fsync per commit).
	SQLiteSync string
	// Lease is how long a running job stays its worker's without a
	// heartbeat: after a worker dies, its jobs wait this long before they
	// run elsewhere. Heartbeats come every third of it.
	Lease time.Duration
	// Tokens are the accepted bearer tokens. None means open mode.
	Tokens []Token
	// Limits apply to every request, per token.
	Limits Limits
	// Queues is keyed by queue name; never nil after Default, Parse or Load.
	Queues map[string]Queue
	// Webhooks govern the calls docket makes to jobs' webhook URLs.
	Webhooks Webhooks
	// Apps are the built-in apps mounted, each with its queues (see
	// KnownApps).
	Apps []string
	// Upstreams are the HTTP services docket fronts as a gateway.
	Upstreams []Upstream
}

// KnownApps are the built-in apps: "pdf" is the PDF queues (pdf.render,
// pdf.ocr) and the routes of the PDF OCR service they serve.
var KnownApps = []string{"pdf"}

// Webhooks configure webhook deliveries.
type Webhooks struct {
	// Secret signs every delivery. Empty: docket generates one at first
	// start and keeps it in the data directory, so that receivers keep
	// verifying across restarts.
	Secret string
	// AllowPrivate lets deliveries reach loopback, private and link-local
	// addresses, which are refused by default so that a job's submitter
	// cannot make docket call services only it can reach.
	AllowPrivate bool
	// MaxAttempts and MaxAge bound the retries of one delivery; it is
	// dropped when either is reached.
	MaxAttempts int
	MaxAge      time.Duration
}

// Token is one accepted bearer token. Only its SHA-256 is kept so that a
// dumped or logged Config cannot leak credentials.
type Token struct {
	// Owner names whoever holds the token; jobs are attributed to it.
	Owner string
	// Scopes are what the token may do; see the Scope constants.
	Scopes []string
	// Hash is the SHA-256 of the token as presented by clients.
	Hash [32]byte
}

// The scopes a token can grant.
const (
	ScopeSubmit = "submit"
	ScopeRead   = "read"
	ScopeAdmin  = "admin"
	ScopeWorker = "worker"
	// ScopeMetrics reads /metrics and nothing else, for a scraper.
	ScopeMetrics = "metrics"
)

// Limits protect the server from oversized or overly frequent requests.
type Limits struct {
	// MaxBody is the largest request body in bytes; 0 means no limit.
	MaxBody int64
	// Rate is the sustained requests per second allowed per token; 0 means
	// no limit.
	Rate float64
	// Burst is how many requests a token may make at once above Rate.
	Burst int
}

// Queue is the policy of one named queue.
type Queue struct {
	// Concurrency is the number of local workers on each node; 0 means the
	// queue is served by remote workers only.
	Concurrency int
	// MaxQueued is the admission limit beyond which submissions get 503;
	// 0 means unlimited.
	MaxQueued int
	// Timeout bounds each attempt; 0 means no limit.
	Timeout time.Duration
	// Retention is how long finished jobs are kept.
	Retention time.Duration
	// MaxAttempts counts the first run too, so 1 means never retry.
	MaxAttempts int
	// Command is the argv run for each job, with {input} and {output}
	// placeholders; nil when the queue has no local command.
	Command []string
	// ResultType is the content type of a command's result, if known.
	ResultType string
	// Paused stops the queue from starting jobs until it is cleared.
	Paused bool
	// Prefetch bounds the jobs a node claims ahead of its free workers,
	// which it does only for jobs quick enough to start within 20ms; 0
	// means six times Concurrency, a negative value none.
	Prefetch int
}

// Default returns the configuration used when neither the file nor the
// environment says otherwise. It has no queues and no tokens (open mode).
func Default() Config {
	return Config{
		Listen:     "127.0.0.1:8080",
		DataDir:    "./docket-data",
		Store:      "sqlite",
		SQLiteSync: "normal",
		Lease:      30 * time.Second,
		Limits:     Limits{MaxBody: 1 << 30, Burst: 20},
		Queues:     map[string]Queue{},
		Webhooks:   Webhooks{MaxAttempts: 20, MaxAge: 24 * time.Hour},
	}
}

// DefaultQueue returns the policy a queue gets for every key it omits.
func DefaultQueue() Queue {
	return Queue{Concurrency: 1, MaxAttempts: 3, Retention: 24 * time.Hour}
}

// Load reads the file at path and returns the resulting configuration; see
// Parse for the steps. An empty path means there is no file, so only the
// defaults and the environment apply.
func Load(path string) (Config, error) {
	if path == "" {
		return Parse(nil, os.Getenv)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data, os.Getenv)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse builds a configuration from the YAML in data: it expands ${VAR}
// references with getenv, decodes the YAML (rejecting unknown keys), fills in
// defaults, applies DOCKET_* overrides from getenv and validates the result.
//
// ${VAR} is replaced by its raw text before YAML parsing, so a value that may
// contain quotes, backslashes or newlines should be used only where YAML
// accepts them (a plain or single-quoted scalar). $$ stands for a literal $;
// any other $ is left alone so shell snippets in commands survive.
func Parse(data []byte, getenv func(string) string) (Config, error) {
	text, err := expand(string(data), getenv)
	if err != nil {
		return Config{}, err
	}
	c, err := decode([]byte(text))
	if err != nil {
		return Config{}, err
	}
	if err := applyEnv(&c, getenv); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate reports every problem in c, one per line, so that a caller that
// changed fields (for example from flags) can check the result again.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s: %s", key, fmt.Sprintf(format, args...)))
	}
	if c.Listen == "" {
		bad("listen", "must not be empty")
	}
	if c.DataDir == "" {
		bad("data_dir", "must not be empty")
	}
	if c.Store != "sqlite" && !strings.HasPrefix(c.Store, "postgres://") && !strings.HasPrefix(c.Store, "postgresql://") {
		bad("store", `must be "sqlite" or a postgres:// URL, got %q`, c.Store)
	}
	if c.Lease < time.Second || c.Lease > time.Hour {
		bad("lease", "must be between 1s and 1h, got %s", c.Lease)
	}
	if c.SQLiteSync != "normal" && c.SQLiteSync != "full" {
		bad("sqlite_sync", `must be "normal" or "full", got %q`, c.SQLiteSync)
	}

	if c.Limits.MaxBody < 0 {
		bad("limits.max_body", "must not be negative, got %d", c.Limits.MaxBody)
	}
	if c.Limits.Rate < 0 || math.IsNaN(c.Limits.Rate) || math.IsInf(c.Limits.Rate, 0) {
		bad("limits.rate", "must be a finite, non-negative rate, got %v", c.Limits.Rate)
	}
	if c.Limits.Burst < 0 {
		bad("limits.burst", "must not be negative, got %d", c.Limits.Burst)
	} else if c.Limits.Burst == 0 && c.Limits.Rate > 0 {
		// A token bucket that holds nothing would refuse every request.
		bad("limits.burst", "must be at least 1 when a rate is set")
	}

	if c.Webhooks.MaxAttempts < 1 {
		bad("webhook_max_attempts", "must be at least 1, got %d", c.Webhooks.MaxAttempts)
	}
	if c.Webhooks.MaxAge <= 0 {
		bad("webhook_max_age", "must be positive, got %v", c.Webhooks.MaxAge)
	}

	for _, a := range c.Apps {
		if !slices.Contains(KnownApps, a) {
			bad("apps", "unknown app %q (known: %s)", a, strings.Join(KnownApps, ", "))
		}
	}

	c.validateUpstreams(bad)

	seen := map[[32]byte]int{}
	for i, t := range c.Tokens {
		key := fmt.Sprintf("tokens[%d]", i)
		if t.Owner == "" {
			bad(key, "owner must not be empty")
		}
		if len(t.Scopes) == 0 {
			bad(key, "needs at least one scope")
		}
		for _, s := range t.Scopes {
			if !validScope(s) {
				bad(key, "unknown scope %q (want submit, read, admin, worker or metrics)", s)
			}
		}
		if t.Hash == ([32]byte{}) {
			bad(key, "has no token hash")
		} else if j, dup := seen[t.Hash]; dup {
			// Two entries for one secret would make its owner ambiguous.
			bad(key, "same token as tokens[%d]", j)
		} else {
			seen[t.Hash] = i
		}
	}

	for _, name := range slices.Sorted(maps.Keys(c.Queues)) {
		q := c.Queues[name]
		if !validQueueName(name) {
			bad("queues", "invalid queue name %q: want 1 to 128 characters from a-z A-Z 0-9 . _ - (not . or ..)", name)
			continue
		}
		key := "queues." + name
		if q.Concurrency < 0 {
			bad(key+".concurrency", "must not be negative, got %d", q.Concurrency)
		}
		if q.MaxQueued < 0 {
			bad(key+".max_queued", "must not be negative, got %d", q.MaxQueued)
		}
		if q.Timeout < 0 {
			bad(key+".timeout", "must not be negative, got %v", q.Timeout)
		}
		if q.Retention < 0 {
			bad(key+".retention", "must not be negative, got %v", q.Retention)
		}
		if q.MaxAttempts < 1 {
			bad(key+".max_attempts", "must be at least 1, got %d", q.MaxAttempts)
		}
		if q.Command != nil && (len(q.Command) == 0 || q.Command[0] == "") {
			bad(key+".command", "must name a program")
		}
		if q.ResultType != "" {
			if _, _, err := mime.ParseMediaType(q.ResultType); err != nil {
				bad(key+".result_type", "invalid content type %q: %v", q.ResultType, err)
			}
		}
	}
	return errors.Join(errs...)
}

func validScope(s string) bool {
	switch s {
	case ScopeSubmit, ScopeRead, ScopeAdmin, ScopeWorker, ScopeMetrics:
		return true
	}
	return false
}

// validQueueName keeps names safe to use in URLs, file names and log lines
// without escaping; "." and ".." are refused because they are paths.
func validQueueName(name string) bool {
	if len(name) < 1 || len(name) > 128 || name == "." || name == ".." {
		return false
	}
	for _, r := range name {
		switch {
		case 'a' <= r && r <= 'z', 'A' <= r && r <= 'Z', '0' <= r && r <= '9', r == '.', r == '_', r == '-':
		default:
			return false
		}
	}
	return true
}
