package docket_test

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/docket/docket"
)

// A Go handler: it reports progress, sets a result and stores an artifact.
func Example() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "docket-example-")
	defer os.RemoveAll(dir)

	d, err := docket.Open(ctx, docket.Config{DataDir: dir})
	if err != nil {
		panic(err)
	}
	defer d.Close(ctx)

	d.Handle("shout", docket.HandlerFunc(func(ctx context.Context, j *docket.Job) error {
		in, err := j.Input(ctx)
		if err != nil {
			return err
		}
		words := strings.Fields(string(in))
		for i := range words {
			words[i] = strings.ToUpper(words[i])
			j.Progress(int64(i+1), int64(len(words)), "word "+words[i])
		}
		j.SetResult("text/plain", []byte(strings.Join(words, " ")))
		return j.AddArtifact("count.txt", "text/plain", strings.NewReader(fmt.Sprint(len(words))))
	}))
	if err := d.Start(); err != nil {
		panic(err)
	}

	job, _ := d.Submit(ctx, "shout", []byte("slow work made asynchronous"), docket.SubmitOptions{ContentType: "text/plain"})
	fmt.Println("submitted:", job.State)

	job, _ = d.Wait(ctx, job.ID)
	fmt.Println("finished:", job.State, job.Progress.Current, "of", job.Progress.Total)

	ctype, body, _ := d.Result(ctx, job.ID)
	defer body.Close()
	text, _ := io.ReadAll(body)
	fmt.Println(ctype, string(text))
	// Output:
	// submitted: queued
	// finished: succeeded 4 of 4
	// text/plain SLOW WORK MADE ASYNCHRONOUS
}

// A queue run by an external command: its stdout is the result and its
// "progress N/M" lines are progress.
func ExampleQueue_command() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "docket-example-")
	defer os.RemoveAll(dir)

	d, err := docket.Open(ctx, docket.Config{DataDir: dir, Queues: map[string]docket.Queue{
		"count": {Concurrency: 2, ResultType: "text/plain",
			Command: []string{"sh", "-c", `echo "progress 1/1 counting"; wc -w < "$1"`, "sh", "{input}"}},
	}})
	if err != nil {
		panic(err)
	}
	defer d.Close(ctx)
	d.Start()

	job, _ := d.Submit(ctx, "count", []byte("one two three"), docket.SubmitOptions{})
	job, _ = d.Wait(ctx, job.ID)
	_, body, _ := d.Result(ctx, job.ID)
	defer body.Close()
	n, _ := io.ReadAll(body)
	fmt.Println(job.State, job.Progress.Message, strings.TrimSpace(string(n)))
	// Output: succeeded counting 3
}
