package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/docket/docket/internal/pdfapp"
)

// needPDFTools skips a test without the PDF tools, or fails it with
// CI=true, where they are installed and a skip would hide a broken setup.
func needPDFTools(t *testing.T) {
	t.Helper()
	if _, err := pdfapp.FindTools(t.Context()); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("CI=true and the PDF tools are missing: %v", err)
		}
		t.Skipf("PDF tools missing (set CI=true to fail instead): %v", err)
	}
}

// startServe runs docket serve with args until the test ends, and returns
// its URL and its logs.
func startServe(t *testing.T, args ...string) (string, *syncBuffer) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	logs := &syncBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"serve", "-data-dir", t.TempDir(), "-listen", "127.0.0.1:0"}, args...), io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v\n%s", err, logs.String())
		}
	})
	re := regexp.MustCompile(`url=(http://\S+)`)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if m := re.FindStringSubmatch(logs.String()); m != nil {
			return m[1], logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("not started: %s", logs.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// --app pdf mounts the PDF queues next to the demo queue, says which tools
// it found, and renders a PDF submitted over HTTP.
func TestServeWithPDFApp(t *testing.T) {
	needPDFTools(t)
	base, logs := startServe(t, "-app", "pdf")
	for _, want := range []string{"PDF app: tools found", "pdftoppm=", "tesseract=", "languages=", "runs="} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("start logs lack %q:\n%s", want, logs.String())
		}
	}
	doc, err := os.ReadFile("../../internal/pdfapp/testdata/hello.pdf")
	if err != nil {
		t.Fatal(err)
	}
	res, err := http.Post(base+"/v1/queues/pdf.render/jobs?label=dpi:50", "application/pdf", strings.NewReader(string(doc)))
	if err != nil || res.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %v %v", res, err)
	}
	var j struct {
		ID string `json:"id"`
	}
	json.NewDecoder(res.Body).Decode(&j)
	res.Body.Close()
	res, err = http.Get(base + "/v1/jobs/" + j.ID + "?wait=30s&after=100000")
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		State     string `json:"state"`
		Artifacts int    `json:"artifacts"`
		Progress  struct {
			Current, Total int
		} `json:"progress"`
	}
	json.NewDecoder(res.Body).Decode(&got)
	res.Body.Close()
	if got.State != "succeeded" || got.Artifacts != 2 || got.Progress.Current != 2 || got.Progress.Total != 2 {
		t.Fatalf("job %+v", got)
	}
	res, err = http.Get(base + "/v1/queues")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	for _, q := range []string{`"echo"`, `"pdf.render"`, `"pdf.ocr"`} {
		if !strings.Contains(string(b), q) {
			t.Errorf("queue %s not served: %s", q, b)
		}
	}
}

// Without the tools, a node that would run the PDF queues refuses to
// start and says what to install; one that only declares them starts.
func TestPDFAppNeedsTools(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	for _, cmd := range []string{"serve", "worker"} {
		args := []string{cmd, "-data-dir", t.TempDir(), "-app", "pdf"}
		if cmd == "serve" {
			args = append(args, "-listen", "127.0.0.1:0")
		}
		err := run(t.Context(), args, io.Discard, io.Discard)
		if err == nil {
			t.Fatalf("%s started without the PDF tools", cmd)
		}
		for _, want := range []string{"pdftoppm", "pdfinfo", "tesseract", "apt-get install -y poppler-utils tesseract-ocr tesseract-ocr-eng"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not mention %q", cmd, err, want)
			}
		}
	}
	_, logs := startServe(t, "-app", "pdf", "-work=false")
	if !strings.Contains(logs.String(), "PDF app: queues declared, run by other nodes") {
		t.Errorf("logs: %s", logs.String())
	}
}

func TestPDFAppFlagErrors(t *testing.T) {
	dir := t.TempDir()
	cfg := dir + "/docket.yaml"
	os.WriteFile(cfg, []byte("queues:\n  pdf.ocr:\n    command: [\"true\"]\n"), 0o644)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"serve", "-app", "video", "-listen", "127.0.0.1:0"}, `unknown app "video"`},
		{[]string{"serve", "-app", "pdf", "-config", cfg, "-data-dir", dir, "-listen", "127.0.0.1:0"}, "queues.pdf.ocr: docket runs this queue itself"},
		{[]string{"worker", "-queues", "pdf.ocr", "-data-dir", dir}, `no queue "pdf.ocr"`},
	}
	for _, c := range cases {
		err := run(t.Context(), c.args, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}
