package client_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/docket/docket/client"
	"github.com/docket/docket/internal/apitest"
)

// Submit work, follow it to its end, and read the result.
func Example() {
	// A docket server for the example, with its "echo" queue: a job
	// returns its input, after the progress steps the input asks for.
	srv, err := apitest.New(apitest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()

	ctx := context.Background()
	c := client.New(srv.URL, "") // for your server: client.New("http://127.0.0.1:8080", os.Getenv("DOCKET_TOKEN"))
	job, err := c.Submit(ctx, "echo", strings.NewReader(`{"steps": 2}`), client.SubmitOptions{
		ContentType: "application/json",
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
	// application/json
	// {"steps": 2}
}

// Result tells a job still to run from one that failed.
func ExampleClient_Result() {
	srv, err := apitest.New(apitest.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer srv.Close()
	ctx := context.Background()
	c := client.New(srv.URL, "")

	// Not to run before a minute from now.
	job, _ := c.Submit(ctx, "echo", strings.NewReader("{}"), client.SubmitOptions{ContentType: "application/json", Delay: time.Minute})
	_, _, err = c.Result(ctx, job.ID)
	if pe, ok := errors.AsType[*client.PendingError](err); ok {
		fmt.Println("pending; ask again in", pe.RetryAfter)
	}

	// The echo queue fails the jobs that ask it to.
	job, _ = c.Submit(ctx, "echo", strings.NewReader(`{"fail": "tesseract: no pages"}`), client.SubmitOptions{ContentType: "application/json"})
	c.Wait(ctx, job.ID, nil)
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
