package main

import (
	"io"
	"strings"
	"testing"
)

func TestMedianAndFormat(t *testing.T) {
	if m, ok := median([]float64{3, 1, 2}); !ok || m != 2 {
		t.Errorf("median of 3: %v %v", m, ok)
	}
	if m, ok := median([]float64{4, 1, 2, 3}); !ok || m != 2.5 {
		t.Errorf("median of 4: %v %v", m, ok)
	}
	if _, ok := median(nil); ok {
		t.Error("median of nothing")
	}
	for v, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567.4: "1,234,567", -12345: "-12,345"} {
		if got := thousands(v); got != want {
			t.Errorf("thousands(%v) = %q, want %q", v, got, want)
		}
	}
}

func TestTableVerdicts(t *testing.T) {
	c, err := parse([]string{"-rounds", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := results{}
	r.add("docket", map[string]float64{"drain": 30000, "start50": 1, "done50": 2})
	r.add("docket", map[string]float64{"drain": 32000, "start50": 1.2, "done50": 12})
	r.add("river", map[string]float64{"drain": 20000, "start50": 2, "done50": 250})
	r.add("river", map[string]float64{"drain": 22000, "start50": 2, "done50": 250})
	var b strings.Builder
	r.table(&b, c)
	out := b.String()
	for _, want := range []string{
		"| drain: 50,000 queued no-op jobs, 100 workers | 31,000 jobs/s (30,000–32,000) | 21,000 jobs/s (20,000–22,000) | 1.48 | docket ≥ 1.5× River | NOT met |",
		"| idle: insert → handler start, p50 | 1.10 ms (1.00–1.20) | 2.00 ms (2.00–2.00) | 0.55 | docket ≤ River | met |",
		"| idle: insert → completion seen by a waiter, p50 | 7.00 ms (2.00–12.0) | 250 ms (250–250) | 0.03 | docket ≤ 10 ms | met |",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks\n%s\nin\n%s", want, out)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	for _, args := range [][]string{
		{"-systems", "docket,sidekiq"},
		{"-workloads", "drain,bogus"},
		{"-river-poll", "fast"},
		{"-rounds", "0"},
		{"extra"},
	} {
		if _, err := parse(args, io.Discard); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
