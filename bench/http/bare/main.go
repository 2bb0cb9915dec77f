// Command bare is the ceiling for bench/http/run.sh: a plain net/http server
// that answers every request with a small JSON body, {"ok":true}, after
// reading the request body, so that the HTTP measurements of docket can be
// set against what net/http alone achieves on the same machine.
//
//	go run ./bench/http/bare -listen 127.0.0.1:0
//
// It prints the address it listens on ("listening on http://HOST:PORT") and
// stops on SIGINT or SIGTERM.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

var body = []byte(`{"ok":true}` + "\n")

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "address to serve HTTP on (port 0: any free port)")
	flag.Parse()
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/json")
			w.Write(body)
		}),
		ReadHeaderTimeout: 10 * time.Second,
	}
	fmt.Printf("listening on http://%s\n", ln.Addr())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		log.Fatal(err)
	}
}
