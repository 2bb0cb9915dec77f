package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/docket/docket/internal/store/postgres/pgtest"
)

// TestBenchPostgres runs `docket bench --store postgres://...` at a small
// size, with a CPU profile, and checks what it prints.
func TestBenchPostgres(t *testing.T) {
	url := pgtest.URL(t)
	prof := filepath.Join(t.TempDir(), "cpu.prof")
	var out bytes.Buffer
	args := []string{"bench", "--store", url, "-mode", "drain", "-jobs", "300", "-batch", "100", "-workers", "5", "-cpuprofile", prof}
	if err := run(t.Context(), args, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"store: PostgreSQL at ", "drain: inserted 300 jobs", "drain: 300 no-op jobs with 5 workers"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, out.String())
		}
	}
	if st, err := os.Stat(prof); err != nil || st.Size() == 0 {
		t.Errorf("cpu profile: %v", err)
	}
}

func TestBenchRefusesOtherStores(t *testing.T) {
	err := run(t.Context(), []string{"bench", "--store", "mysql://h/db", "-mode", "drain", "-jobs", "10"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "postgres://") {
		t.Errorf("got %v, want a refusal naming postgres://", err)
	}
}
