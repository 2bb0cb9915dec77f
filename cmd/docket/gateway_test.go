package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// serve --upstream puts docket in front of a service: an asynchronous
// request is answered 202 and its response is there later, through the
// status monitor; /metrics counts what happened.
func TestServeWithUpstream(t *testing.T) {
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Seen-Path", r.URL.Path)
		w.WriteHeader(http.StatusCreated)
		w.Write(append([]byte("made "), b...))
	}))
	defer up.Close()
	url, logs := startServe(t, "--upstream", up.URL)
	if !strings.Contains(logs.String(), "gateway: upstream") {
		t.Errorf("no upstream in the start log:\n%s", logs.String())
	}

	// Synchronous: proxied.
	resp, err := http.Post(url+"/things", "text/plain", strings.NewReader("sync"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(body) != "made sync" {
		t.Fatalf("sync: %d %q", resp.StatusCode, body)
	}

	// Asynchronous: 202, then the upstream's response via the monitor.
	req, _ := http.NewRequest("POST", url+"/things", strings.NewReader("async"))
	req.Header.Set("Prefer", "respond-async")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var acc struct {
		ID string `json:"async_request_id"`
	}
	json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != 202 || acc.ID == "" || resp.Header.Get("Location") != "/v1/jobs/"+acc.ID {
		t.Fatalf("async: %d %+v %v", resp.StatusCode, acc, resp.Header)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err = http.Get(url + "/v1/jobs/" + acc.ID + "/status") // follows the 303
		if err != nil {
			t.Fatal(err)
		}
		body, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 202 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the request was not replayed in time")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp.StatusCode != 201 || string(body) != "made async" || resp.Header.Get("X-Seen-Path") != "/things" {
		t.Fatalf("replayed: %d %q %v", resp.StatusCode, body, resp.Header)
	}

	resp, err = http.Get(url + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`docket_jobs_finished_total{queue="http",state="succeeded"} 1`,
		`docket_jobs{queue="http",state="succeeded"} 1`, `docket_http_requests_total{code="303",route="GET /v1/jobs/{id}/status"} 1`} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

func TestLogFormats(t *testing.T) {
	for _, c := range []struct{ format, want string }{
		{"", `level=INFO msg=hello request_id=r1`},
		{"text", `level=INFO msg=hello request_id=r1`},
		{"json", `"level":"INFO","msg":"hello","request_id":"r1"}`},
	} {
		var b bytes.Buffer
		log, err := newLogger(&b, "info", c.format)
		if err != nil {
			t.Fatal(err)
		}
		log.Info("hello", slog.String("request_id", "r1"))
		if !strings.Contains(b.String(), c.want) {
			t.Errorf("format %q: %s", c.format, b.String())
		}
	}
	if _, err := newLogger(io.Discard, "info", "xml"); err == nil {
		t.Error("xml accepted")
	}
}
