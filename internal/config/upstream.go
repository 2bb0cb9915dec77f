package config

import (
	"fmt"
	"net/url"
	"strings"
)

// Upstream is an HTTP service docket fronts as a gateway: requests under
// Prefix are proxied to URL, and those that ask for it are made
// asynchronous (jobs of the http queue).
type Upstream struct {
	// Name labels the upstream's jobs, by which workers find where to
	// replay them; default "default" for the first, required for others.
	Name string
	// URL is the service's base URL.
	URL string
	// Prefix selects the requests for this upstream by path ("/": all).
	Prefix string
	// RequireAsync lists routes (ServeMux patterns such as "POST
	// /reports/") that answer 409 unless called asynchronously.
	RequireAsync []string
	// PassAuthorization forwards the caller's Authorization header.
	PassAuthorization bool
	// RetryUnsafe allows retrying non-idempotent requests that may have
	// reached the upstream.
	RetryUnsafe bool
	// MaxResponse bounds a recorded response body; 0: 1 GiB.
	MaxResponse int64
}

type rawUpstream struct {
	Name              opt[string]   `yaml:"name"`
	URL               opt[string]   `yaml:"url"`
	Prefix            opt[string]   `yaml:"prefix"`
	RequireAsync      opt[[]string] `yaml:"require_async"`
	PassAuthorization opt[bool]     `yaml:"pass_authorization"`
	RetryUnsafe       opt[bool]     `yaml:"retry_unsafe"`
	MaxResponse       opt[string]   `yaml:"max_response"`
}

// upstream is the i-th upstream of the file; the first is named "default"
// unless named otherwise.
func (ru rawUpstream) upstream(i int) (Upstream, error) {
	key := fmt.Sprintf("upstreams[%d]", i)
	u := Upstream{Prefix: "/"}
	if i == 0 {
		u.Name = "default"
	}
	setValue(&u.Name, ru.Name)
	setValue(&u.URL, ru.URL)
	setValue(&u.Prefix, ru.Prefix)
	setValue(&u.RequireAsync, ru.RequireAsync)
	setValue(&u.PassAuthorization, ru.PassAuthorization)
	setValue(&u.RetryUnsafe, ru.RetryUnsafe)
	if ru.MaxResponse.Set {
		n, err := ParseSize(ru.MaxResponse.V)
		if err != nil {
			return u, at(ru.MaxResponse.Line, key+".max_response", err)
		}
		u.MaxResponse = n
	}
	return u, nil
}

// validateUpstreams checks the upstreams.
func (c Config) validateUpstreams(bad func(key, format string, args ...any)) {
	names, prefixes := map[string]bool{}, map[string]bool{}
	for i, u := range c.Upstreams {
		key := fmt.Sprintf("upstreams[%d]", i)
		switch {
		case u.Name == "":
			bad(key+".name", "required when there are several upstreams")
		case names[u.Name]:
			bad(key+".name", "%q names two upstreams", u.Name)
		}
		names[u.Name] = true
		p, err := url.Parse(u.URL)
		if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
			bad(key+".url", "want an http:// or https:// URL, got %q", u.URL)
		}
		if !strings.HasPrefix(u.Prefix, "/") {
			bad(key+".prefix", "must start with /, got %q", u.Prefix)
		} else if prefixes[u.Prefix] {
			bad(key+".prefix", "%q is served by two upstreams", u.Prefix)
		}
		prefixes[u.Prefix] = true
		if u.MaxResponse < 0 {
			bad(key+".max_response", "must not be negative")
		}
	}
}
