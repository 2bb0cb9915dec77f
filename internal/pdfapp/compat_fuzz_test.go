package pdfapp_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

// FuzzProcessPDF sends arbitrary content types and bodies to POST
// /process_pdf: every answer is 200 with a job id, or a client error given
// as a problem with a detail, never a server error or a panic; and a job is
// made only of a PDF.
func FuzzProcessPDF(f *testing.F) {
	ct, body := form("file", "a.pdf", pdf(64))
	f.Add(ct, body.String())
	f.Add("multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n%PDF-1.4\r\n--XX--\r\n")
	f.Add("multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"file\"\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n--XX--\r\n")
	f.Add("multipart/form-data; boundary=XX", "--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.pdf\"\r\n\r\n%PDF-")
	f.Add("multipart/form-data; boundary=", "--")
	f.Add("multipart/mixed; boundary=XX", "--XX--\r\n")
	f.Add("application/pdf", "%PDF-1.7")
	f.Add("text/plain; charset=\"", "")
	e := newEnv(f, envOptions{idle: true, maxBody: 1 << 16})
	f.Fuzz(func(t *testing.T, ctype, body string) {
		if strings.ContainsFunc(ctype, func(r rune) bool { return r < ' ' && r != '\t' || r == 0x7f }) {
			return // not a header a client can send
		}
		e.t = t
		r := e.do(http.MethodPost, "/process_pdf", aliceToken, strings.NewReader(body), ctype)
		switch {
		case r.status == http.StatusOK:
			var m map[string]any
			if err := json.Unmarshal(r.body, &m); err != nil || m["job_id"] == nil || m["status"] != "pending" {
				t.Fatalf("200 with body %q", r.body)
			}
			if in := e.srv.Input(t, m["job_id"].(string)); !strings.Contains(string(in[:min(len(in), 1024)]), "%PDF-") {
				t.Fatalf("a job of %q", in)
			}
		case r.status >= 400 && r.status < 500:
			r.problem(t, r.status, strings.TrimPrefix(r.json(t)["type"].(string), "urn:docket:problem:"))
		default:
			t.Fatalf("status %d for type %q body %q: %s", r.status, ctype, body, r.body)
		}
	})
}
