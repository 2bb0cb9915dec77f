package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/docket/docket/client"
	"github.com/docket/docket/client/clienttest"
)

// Submit work, follow it to its end, and read the result.
func Example() {
	// A stand-in for a docket server; its "worker" reports two steps.
	srv := clienttest.NewServer("")
	defer srv.Close()
	srv.OnSubmit(func(id string) {
		srv.Progress(id, 1, 2, "page 1")
		srv.Progress(id, 2, 2, "page 2")
		srv.Succeed(id, "text/markdown", []byte("# Scanned\n"))
	})

	ctx := context.Background()
	c := client.New(srv.URL, "") // a real server: client.New("http://127.0.0.1:8080", os.Getenv("DOCKET_TOKEN"))
	job, err := c.Submit(ctx, "echo", strings.NewReader("%PDF-1.7 ..."), client.SubmitOptions{
		ContentType: "application/pdf",
		Filename:    "scan.pdf",
		Labels:      map[string]string{"customer": "acme"},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	job, err = c.Wait(ctx, job.ID, func(j *client.Job) {
		// Called on every change: a place for a progress bar.
		_ = j.Progress.Percent
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(job.State, job.Progress.Current, "of", job.Progress.Total)
	ctype, body, err := c.Result(ctx, job.ID)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer body.Close()
	fmt.Println(ctype)
	io.Copy(os.Stdout, body)
	// Output:
	// succeeded 2 of 2
	// text/markdown
	// # Scanned
}

// Result tells a job still running from one that failed.
func ExampleClient_Result() {
	srv := clienttest.NewServer("")
	defer srv.Close()
	ctx := context.Background()
	c := client.New(srv.URL, "")
	job, _ := c.Submit(ctx, "echo", strings.NewReader("{}"), client.SubmitOptions{ContentType: "application/json"})

	_, _, err := c.Result(ctx, job.ID)
	if pe, ok := errors.AsType[*client.PendingError](err); ok {
		fmt.Println("pending; ask again in", pe.RetryAfter)
	}

	srv.Fail(job.ID, "tesseract: no pages")
	_, _, err = c.Result(ctx, job.ID)
	var p *client.Problem
	if errors.As(err, &p) {
		fmt.Println(p.Status, p.Detail, p.Code)
	}

	_, err = c.Get(ctx, "no-such-job")
	fmt.Println(client.IsNotFound(err))
	// Output:
	// pending; ask again in 1s
	// 500 tesseract: no pages handler_error
	// true
}
