package config

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

const example = `
listen: "0.0.0.0:9000"
data_dir: "/var/lib/docket"
store: "sqlite"
sqlite_sync: "full"
tokens:
  - {token: "${ALICE_TOKEN}", owner: "alice", scopes: [submit, read]}
  - {sha256: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", owner: "ops", scopes: [admin]}
  - {token: "${WORKER_TOKEN}", owner: "workers", scopes: [worker]}
limits: {max_body: "1GiB", rate: "60/m", burst: 20}
queues:
  thumbs:
    concurrency: 4
    max_queued: 10000
    timeout: "10m"
    max_attempts: 3
    retention: "24h"
    command: ["./bin/thumbs", "{input}", "{output}"]
    result_type: "text/plain"
    paused: false
    prefetch: -1
  remote:
    concurrency: 0
`

// env returns a getenv over a fixed map, so tests never see the real
// environment.
func env(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func hash(s string) [32]byte { return sha256.Sum256([]byte(s)) }

func TestParseExample(t *testing.T) {
	got, err := Parse([]byte(example), env("ALICE_TOKEN", "a-secret", "WORKER_TOKEN", "w-secret"))
	if err != nil {
		t.Fatal(err)
	}
	var opsHash [32]byte
	hex.Decode(opsHash[:], []byte("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"))
	want := Config{
		Listen:     "0.0.0.0:9000",
		DataDir:    "/var/lib/docket",
		Store:      "sqlite",
		SQLiteSync: "full",
		Lease:      30 * time.Second,
		Tokens: []Token{
			{Owner: "alice", Scopes: []string{"submit", "read"}, Hash: hash("a-secret")},
			{Owner: "ops", Scopes: []string{"admin"}, Hash: opsHash},
			{Owner: "workers", Scopes: []string{"worker"}, Hash: hash("w-secret")},
		},
		Limits: Limits{MaxBody: 1 << 30, Rate: 1, Burst: 20},
		Queues: map[string]Queue{
			"thumbs": {
				Concurrency: 4, MaxQueued: 10000, Timeout: 10 * time.Minute, MaxAttempts: 3,
				Retention: 24 * time.Hour, Command: []string{"./bin/thumbs", "{input}", "{output}"},
				ResultType: "text/plain", Prefetch: -1,
			},
			"remote": {Concurrency: 0, MaxAttempts: 3, Retention: 24 * time.Hour},
		},
		Webhooks: Webhooks{MaxAttempts: 20, MaxAge: 24 * time.Hour},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %+v\nwant %+v", got, want)
	}
	if opsHash != hash("test") {
		t.Errorf("sha256 entry decoded to %x", opsHash)
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	for _, in := range []string{"", "# only a comment\n", "---\n", "queues: {}\n"} {
		got, err := Parse([]byte(in), env())
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if !reflect.DeepEqual(got, Default()) {
			t.Errorf("%q: got %+v, want defaults", in, got)
		}
	}
}

func TestExpand(t *testing.T) {
	getenv := env("A", "x", "B_2", "y z")
	tests := []struct{ in, want, err string }{
		{in: "${A}", want: "x"},
		{in: "a${A}b${B_2}c", want: "axby zc"},
		{in: "${UNSET}", want: ""},
		{in: "$$", want: "$"},
		{in: "$${A}", want: "${A}"},
		{in: "$$$${A}", want: "$${A}"},
		{in: "cost $5 and $HOME $", want: "cost $5 and $HOME $"},
		{in: "line1\n${A", err: "line 2: unterminated"},
		{in: "${}", err: "invalid variable name"},
		{in: "${1A}", err: "invalid variable name"},
		{in: "${A-B}", err: "invalid variable name"},
	}
	for _, tt := range tests {
		got, err := expand(tt.in, getenv)
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("expand(%q) error = %v, want %q", tt.in, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("expand(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestParseExpandsBeforeYAML(t *testing.T) {
	in := "data_dir: ${DIR}\nqueues:\n  q:\n    command: [sh, -c, 'echo $1 $$ ${N}']\n    concurrency: ${N}\n"
	c, err := Parse([]byte(in), env("DIR", "/srv/d", "N", "7"))
	if err != nil {
		t.Fatal(err)
	}
	if c.DataDir != "/srv/d" || c.Queues["q"].Concurrency != 7 {
		t.Errorf("got data_dir %q, concurrency %d", c.DataDir, c.Queues["q"].Concurrency)
	}
	if got := c.Queues["q"].Command[2]; got != "echo $1 $ 7" {
		t.Errorf("command arg = %q", got)
	}
}

func TestApps(t *testing.T) {
	c, err := Parse([]byte("apps: [pdf]\n"), env())
	if err != nil || !slices.Equal(c.Apps, []string{"pdf"}) {
		t.Errorf("apps: %v %v", c.Apps, err)
	}
	if _, err := Parse([]byte("apps: [ocr]\n"), env()); err == nil || !strings.Contains(err.Error(), `unknown app "ocr"`) {
		t.Errorf("unknown app: %v", err)
	}
	if c, err := Parse(nil, env()); err != nil || c.Apps != nil {
		t.Errorf("default: %v %v", c.Apps, err)
	}
}

func TestEnvOverrides(t *testing.T) {
	file := "listen: 1.2.3.4:1\ndata_dir: d\nsqlite_sync: full\nlimits: {max_body: 10, rate: 1/s, burst: 3}\n"
	tests := []struct {
		name   string
		getenv func(string) string
		check  func(Config) bool
		err    string
	}{
		{"none", env(), func(c Config) bool {
			return c.Listen == "1.2.3.4:1" && c.DataDir == "d" && c.SQLiteSync == "full" &&
				c.Limits == Limits{MaxBody: 10, Rate: 1, Burst: 3}
		}, ""},
		{"empty means unset", env("DOCKET_LISTEN", ""), func(c Config) bool { return c.Listen == "1.2.3.4:1" }, ""},
		{"listen", env("DOCKET_LISTEN", ":9"), func(c Config) bool { return c.Listen == ":9" }, ""},
		{"data_dir", env("DOCKET_DATA_DIR", "/x"), func(c Config) bool { return c.DataDir == "/x" }, ""},
		{"store", env("DOCKET_STORE", "postgres://u@h/db"), func(c Config) bool { return c.Store == "postgres://u@h/db" }, ""},
		{"sqlite_sync", env("DOCKET_SQLITE_SYNC", "normal"), func(c Config) bool { return c.SQLiteSync == "normal" }, ""},
		{"max_body", env("DOCKET_MAX_BODY", "2KiB"), func(c Config) bool { return c.Limits.MaxBody == 2048 }, ""},
		{"rate", env("DOCKET_RATE", "120/m"), func(c Config) bool { return c.Limits.Rate == 2 }, ""},
		{"burst", env("DOCKET_BURST", "50"), func(c Config) bool { return c.Limits.Burst == 50 }, ""},
		{"bad max_body", env("DOCKET_MAX_BODY", "lots"), nil, "DOCKET_MAX_BODY: invalid size"},
		{"bad rate", env("DOCKET_RATE", "fast"), nil, "DOCKET_RATE: invalid rate"},
		{"bad burst", env("DOCKET_BURST", "x"), nil, "DOCKET_BURST"},
		{"bad sqlite_sync", env("DOCKET_SQLITE_SYNC", "off"), nil, "sqlite_sync"},
		{"lease", env("DOCKET_LEASE", "5s"), func(c Config) bool { return c.Lease == 5*time.Second }, ""},
		{"bad lease", env("DOCKET_LEASE", "soon"), nil, "DOCKET_LEASE"},
		{"lease too short", env("DOCKET_LEASE", "10ms"), nil, "lease"},
		{"tokens", env("DOCKET_TOKENS", "alice:submit+read:s3:cret, ops:admin:x"), func(c Config) bool {
			return len(c.Tokens) == 2 && c.Tokens[0].Owner == "alice" && c.Tokens[0].Hash == sha256.Sum256([]byte("s3:cret")) &&
				len(c.Tokens[0].Scopes) == 2 && c.Tokens[0].Scopes[1] == "read" && c.Tokens[1].Scopes[0] == "admin"
		}, ""},
		{"bad tokens", env("DOCKET_TOKENS", "alice:submit"), nil, "DOCKET_TOKENS"},
		{"webhook secret", env("DOCKET_WEBHOOK_SECRET", "s3cret"), func(c Config) bool { return c.Webhooks.Secret == "s3cret" }, ""},
		{"webhook allow private", env("DOCKET_WEBHOOK_ALLOW_PRIVATE", "true"), func(c Config) bool { return c.Webhooks.AllowPrivate }, ""},
		{"webhook max attempts", env("DOCKET_WEBHOOK_MAX_ATTEMPTS", "3"), func(c Config) bool { return c.Webhooks.MaxAttempts == 3 }, ""},
		{"webhook max age", env("DOCKET_WEBHOOK_MAX_AGE", "2h"), func(c Config) bool { return c.Webhooks.MaxAge == 2*time.Hour }, ""},
		{"bad webhook max age", env("DOCKET_WEBHOOK_MAX_AGE", "later"), nil, "DOCKET_WEBHOOK_MAX_AGE"},
		{"bad webhook allow private", env("DOCKET_WEBHOOK_ALLOW_PRIVATE", "maybe"), nil, "DOCKET_WEBHOOK_ALLOW_PRIVATE"},
		{"bad token scope", env("DOCKET_TOKENS", "alice:write:x"), nil, "scope"},
		{"apps", env("DOCKET_APPS", "pdf"), func(c Config) bool { return slices.Equal(c.Apps, []string{"pdf"}) }, ""},
		{"apps list", env("DOCKET_APPS", " pdf, pdf "), func(c Config) bool { return slices.Equal(c.Apps, []string{"pdf", "pdf"}) }, ""},
		{"unknown app", env("DOCKET_APPS", "pdf,video"), nil, `unknown app "video"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(file), tt.getenv)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("error = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tt.check(c) {
				t.Errorf("unexpected config %+v", c)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string // substrings of the error
	}{
		{"unknown top-level key", "listen: x\nlisten_addr: y\n", []string{"line 2", `unknown key "listen_addr"`}},
		{"unknown queue key", "queues:\n  q:\n    concurency: 2\n", []string{"line 3", `unknown key "concurency"`}},
		{"unknown token key", "tokens:\n  - {token: t, owner: o, scopes: [read], scope: x}\n", []string{`unknown key "scope"`}},
		{"unknown limits key", "limits: {max_bodi: 1}\n", []string{`unknown key "max_bodi"`}},
		{"bad duration", "queues:\n  q:\n    timeout: 10x\n", []string{"line 3", "queues.q.timeout", "10x"}},
		{"duration without unit", "queues:\n  q:\n    retention: 600\n", []string{"queues.q.retention", "missing unit"}},
		{"negative duration", "queues:\n  q:\n    timeout: -1s\n", []string{"queues.q.timeout", "negative"}},
		{"bad size", "limits: {max_body: 1XB}\n", []string{"line 1", "limits.max_body", "invalid size"}},
		{"bad rate", "limits: {rate: 60}\n", []string{"limits.rate", "invalid rate"}},
		{"bad scope", "tokens:\n  - {token: t, owner: o, scopes: [read, write]}\n", []string{"tokens[0]", `unknown scope "write"`}},
		{"no scopes", "tokens:\n  - {token: t, owner: o}\n", []string{"tokens[0]", "scope"}},
		{"token and sha256", "tokens:\n  - {token: t, sha256: " + strings.Repeat("a", 64) + ", owner: o, scopes: [read]}\n", []string{"line 2", "tokens[0]", "only one of token and sha256"}},
		{"neither token nor sha256", "tokens:\n  - {owner: o, scopes: [read]}\n", []string{"tokens[0]", "needs a token or a sha256"}},
		{"short sha256", "tokens:\n  - {sha256: abc, owner: o, scopes: [read]}\n", []string{"tokens[0]", "64 hexadecimal"}},
		{"unset token variable", "tokens:\n  - {token: '${NOPE}', owner: o, scopes: [read]}\n", []string{"tokens[0]", "token is empty"}},
		{"no owner", "tokens:\n  - {token: t, scopes: [read]}\n", []string{"tokens[0]", "owner"}},
		{"duplicate token", "tokens:\n  - {token: t, owner: a, scopes: [read]}\n  - {token: t, owner: b, scopes: [admin]}\n", []string{"tokens[1]", "same token as tokens[0]"}},
		{"bad queue name", "queues:\n  'a b': {}\n", []string{"invalid queue name", `"a b"`}},
		{"dot queue name", "queues:\n  '..': {}\n", []string{"invalid queue name"}},
		{"long queue name", "queues:\n  " + strings.Repeat("q", 129) + ": {}\n", []string{"invalid queue name"}},
		{"negative concurrency", "queues:\n  q:\n    concurrency: -1\n", []string{"queues.q.concurrency", "negative"}},
		{"negative max_queued", "queues:\n  q:\n    max_queued: -5\n", []string{"queues.q.max_queued", "negative"}},
		{"max_attempts 0", "queues:\n  q:\n    max_attempts: 0\n", []string{"queues.q.max_attempts", "at least 1"}},
		{"empty command", "queues:\n  q:\n    command: []\n", []string{"line 3", "queues.q.command", "empty"}},
		{"empty program", "queues:\n  q:\n    command: ['', x]\n", []string{"queues.q.command"}},
		{"bad result_type", "queues:\n  q:\n    result_type: 'not a type'\n", []string{"queues.q.result_type"}},
		{"concurrency not a number", "queues:\n  q:\n    concurrency: four\n", []string{"line 3", "four"}},
		{"sqlite_sync bogus", "sqlite_sync: sometimes\n", []string{"sqlite_sync", `"sometimes"`}},
		{"lease bogus", "lease: later\n", []string{"line 1: lease"}},
		{"bad store", "store: mysql://x\n", []string{"store"}},
		{"empty listen", "listen: ''\n", []string{"listen", "empty"}},
		{"negative burst", "limits: {burst: -1}\n", []string{"limits.burst", "negative"}},
		{"zero burst with rate", "limits: {rate: 1/s, burst: 0}\n", []string{"limits.burst", "at least 1"}},
		{"duplicate queue", "queues:\n  q: {}\n  q: {}\n", []string{`"q" already defined`}},
		{"two documents", "listen: a:1\n---\nlisten: b:1\n", []string{"single YAML document"}},
		{"not a mapping", "just text\n", []string{"cannot unmarshal"}},
		{"syntax error", "queues: [\n", []string{"yaml"}},
		{"several problems at once", "queues:\n  a: {max_attempts: 0}\n  b: {concurrency: -2}\n", []string{"queues.a.max_attempts", "queues.b.concurrency"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in), env())
			if err == nil {
				t.Fatalf("no error for %q", tt.in)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConcurrencyAbsentVsZero(t *testing.T) {
	tests := []struct {
		queue string
		want  int
	}{
		{"{}", 1},
		{"{concurrency: 0}", 0},
		{"{concurrency: 5}", 5},
		{"{concurrency: ~}", 1},
		{"", 1}, // "q:" with no value at all
	}
	for _, tt := range tests {
		c, err := Parse([]byte("queues:\n  q: "+tt.queue+"\n"), env())
		if err != nil {
			t.Fatalf("%q: %v", tt.queue, err)
		}
		if got := c.Queues["q"].Concurrency; got != tt.want {
			t.Errorf("%q: concurrency = %d, want %d", tt.queue, got, tt.want)
		}
	}
}

func TestQueueDefaults(t *testing.T) {
	c, err := Parse([]byte("queues:\n  q: {}\n"), env())
	if err != nil {
		t.Fatal(err)
	}
	want := Queue{Concurrency: 1, MaxQueued: 0, Timeout: 0, MaxAttempts: 3, Retention: 24 * time.Hour}
	if got := c.Queues["q"]; !reflect.DeepEqual(got, want) || !reflect.DeepEqual(got, DefaultQueue()) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1024", 1024, true},
		{"1B", 1, true},
		{"10KB", 10_000, true},
		{"10MB", 10_000_000, true},
		{"1GB", 1_000_000_000, true},
		{"2KiB", 2048, true},
		{"512MiB", 512 << 20, true},
		{"1GiB", 1 << 30, true},
		{"1gib", 1 << 30, true},
		{"1 GiB", 1 << 30, true},
		{" 3mb ", 3_000_000, true},
		{"1TiB", 1 << 40, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false},
		{"8388608TiB", 0, false},
		{"", 0, false},
		{"GiB", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"1GiBs", 0, false},
		{"1K", 0, false},
		{"0x10", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestParseRate(t *testing.T) {
	tests := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"0", 0, true},
		{"5/s", 5, true},
		{"60/m", 1, true},
		{"3600/h", 1, true},
		{"10/30s", 1.0 / 3, true},
		{"1/500ms", 2, true},
		{"1.5/s", 1.5, true},
		{" 6 / m ", 0.1, true},
		{"0/m", 0, false},
		{"-1/s", 0, false},
		{"60", 0, false},
		{"", 0, false},
		{"x/s", 0, false},
		{"1/d", 0, false},
		{"1/0s", 0, false},
		{"1/-1s", 0, false},
		{"inf/s", 0, false},
		{"NaN/s", 0, false},
		{"1e308/1ns", 0, false},
		{"5e-324/1h", 0, false},
	}
	for _, tt := range tests {
		got, err := ParseRate(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "docket.yaml")
	os.WriteFile(good, []byte("listen: ${TEST_DOCKET_LISTEN}\n"), 0o600)
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("listne: x\n"), 0o600)
	t.Setenv("TEST_DOCKET_LISTEN", "127.0.0.1:7000")
	t.Setenv("DOCKET_DATA_DIR", "/from/env")

	c, err := Load(good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:7000" || c.DataDir != "/from/env" {
		t.Errorf("got listen %q, data_dir %q", c.Listen, c.DataDir)
	}

	c, err = Load("")
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != Default().Listen || c.DataDir != "/from/env" {
		t.Errorf("no file: got listen %q, data_dir %q", c.Listen, c.DataDir)
	}

	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `unknown key "listne"`) {
		t.Errorf("bad file: error = %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml")); !os.IsNotExist(unwrapAll(err)) {
		t.Errorf("missing file: error = %v", err)
	}
}

func unwrapAll(err error) error {
	for {
		u, ok := err.(interface{ Unwrap() error })
		if !ok || u.Unwrap() == nil {
			return err
		}
		err = u.Unwrap()
	}
}

// Flags are applied by setting fields after Load; Validate must catch what
// they break.
func TestValidateAfterChanges(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	c.SQLiteSync = "off"
	c.Queues["q"] = Queue{Concurrency: 1}
	c.Tokens = []Token{{Owner: "o", Scopes: []string{ScopeRead}}}
	err := c.Validate()
	for _, w := range []string{"sqlite_sync", "queues.q.max_attempts", "tokens[0]: has no token hash"} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("error %v does not mention %q", err, w)
		}
	}
}

func TestWebhookKeys(t *testing.T) {
	c, err := Parse(nil, env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhooks != (Webhooks{MaxAttempts: 20, MaxAge: 24 * time.Hour}) {
		t.Errorf("defaults: %+v", c.Webhooks)
	}
	c, err = Parse([]byte("webhook_secret: abc\nwebhook_allow_private: true\nwebhook_max_attempts: 5\nwebhook_max_age: 1h\n"), env())
	if err != nil {
		t.Fatal(err)
	}
	if c.Webhooks != (Webhooks{Secret: "abc", AllowPrivate: true, MaxAttempts: 5, MaxAge: time.Hour}) {
		t.Errorf("from the file: %+v", c.Webhooks)
	}
	for file, want := range map[string]string{
		"webhook_max_attempts: 0\n": "webhook_max_attempts",
		"webhook_max_age: soon\n":   "webhook_max_age",
		"webhook_max_age: 0s\n":     "webhook_max_age",
	} {
		if _, err := Parse([]byte(file), env()); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: error %v, want one naming %s", file, err, want)
		}
	}
}

func TestUpstreams(t *testing.T) {
	tests := []struct {
		name, file string
		want       []Upstream
		err        string
	}{
		{"none", "", nil, ""},
		{"one", "upstreams:\n  - url: http://app:8000\n", []Upstream{{Name: "default", URL: "http://app:8000", Prefix: "/"}}, ""},
		{"full", "upstreams:\n  - name: app\n    url: https://app\n    prefix: /api/\n    require_async: [\"POST /api/reports\", /api/export]\n" +
			"    pass_authorization: true\n    retry_unsafe: true\n    max_response: 10MiB\n",
			[]Upstream{{Name: "app", URL: "https://app", Prefix: "/api/", RequireAsync: []string{"POST /api/reports", "/api/export"},
				PassAuthorization: true, RetryUnsafe: true, MaxResponse: 10 << 20}}, ""},
		{"two", "upstreams:\n  - {url: http://a, prefix: /a/}\n  - {name: b, url: http://b, prefix: /b/}\n",
			[]Upstream{{Name: "default", URL: "http://a", Prefix: "/a/"}, {Name: "b", URL: "http://b", Prefix: "/b/"}}, ""},
		{"unnamed second", "upstreams:\n  - {url: http://a, prefix: /a/}\n  - {url: http://b, prefix: /b/}\n", nil, "upstreams[1].name: required"},
		{"same name", "upstreams:\n  - {name: a, url: http://a, prefix: /a/}\n  - {name: a, url: http://b, prefix: /b/}\n", nil, `"a" names two`},
		{"same prefix", "upstreams:\n  - {name: a, url: http://a}\n  - {name: b, url: http://b}\n", nil, `"/" is served by two`},
		{"bad url", "upstreams:\n  - url: ftp://a\n", nil, "upstreams[0].url"},
		{"no url", "upstreams:\n  - prefix: /x\n", nil, "upstreams[0].url"},
		{"bad prefix", "upstreams:\n  - {url: http://a, prefix: api}\n", nil, "must start with /"},
		{"bad size", "upstreams:\n  - {url: http://a, max_response: lots}\n", nil, "max_response"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.file), env())
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(c.Upstreams, tt.want) {
				t.Errorf("upstreams = %+v, want %+v", c.Upstreams, tt.want)
			}
		})
	}
}
