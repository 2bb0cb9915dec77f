package api

import (
	"net/http"
	"testing"
)

func TestRequestID(t *testing.T) {
	for _, c := range []struct {
		sent string
		kept bool
	}{
		{"abc-123", true},
		{"4bf92f35-77b3/4da6:a3ce+92=9d0e.0e47_36", true},
		{"", false},
		{"has space", false},
		{"new\nline", false},
		{string(make([]byte, 129)), false},
	} {
		got := requestID(c.sent)
		if c.kept != (got == c.sent) || got == "" {
			t.Errorf("requestID(%q) = %q", c.sent, got)
		}
	}
	if requestID("") == requestID("") {
		t.Error("two new request ids are the same")
	}
}

func TestTraceparent(t *testing.T) {
	for _, c := range []struct {
		header, want string
	}{
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"},
		{"", ""},
		{"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", ""}, // a version docket does not know
		{"00-00000000000000000000000000000000-00f067aa0ba902b7-01", ""}, // zero trace id
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", ""}, // zero parent id
		{"00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", ""}, // upper case
		{"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", ""},
	} {
		h := http.Header{}
		if c.header != "" {
			h.Set("Traceparent", c.header)
		}
		if got := Traceparent(h); got != c.want {
			t.Errorf("Traceparent(%q) = %q, want %q", c.header, got, c.want)
		}
	}
}
