package main

import (
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// results holds every round's figures: by system, then by metric key.
type results map[string]map[string][]float64

func (r results) add(system string, vals map[string]float64) {
	if r[system] == nil {
		r[system] = map[string][]float64{}
	}
	for k, v := range vals {
		r[system][k] = append(r[system][k], v)
	}
}

// metric is one line of the table.
type metric struct {
	workload, key string
	label         func(config) string
	unit          string // "jobs/s" or "ms"
	// target judges docket's median against River's; nil: none.
	target *target
}

type target struct {
	text string
	met  func(docket, river float64) bool
	// needsRiver is false for a target on docket's figure alone.
	needsRiver bool
}

var (
	faster = &target{text: "docket ≥ 1.5× River", met: func(d, r float64) bool { return d >= 1.5*r }, needsRiver: true}
	sooner = &target{text: "docket ≤ River", met: func(d, r float64) bool { return d <= r }, needsRiver: true}
	within = &target{text: "docket ≤ 10 ms", met: func(d, _ float64) bool { return d <= 10 }}
)

var metrics = []metric{
	{"drain", "insert", func(c config) string {
		return fmt.Sprintf("drain: insert %s jobs in batches of %s (not a target)", thousands(float64(c.jobs)), thousands(float64(c.batch)))
	}, "jobs/s", nil},
	{"drain", "drain", func(c config) string {
		return fmt.Sprintf("drain: %s queued no-op jobs, %d workers", thousands(float64(c.jobs)), c.workers)
	}, "jobs/s", faster},
	{"concurrent", "inserted", func(c config) string {
		return fmt.Sprintf("concurrent: single inserts from %d goroutines, %d workers running", c.inserters, c.workers)
	}, "jobs/s", faster},
	{"concurrent", "completed", func(c config) string {
		return fmt.Sprintf("concurrent: %s jobs inserted and completed, end to end", thousands(float64(c.concJobs)))
	}, "jobs/s", faster},
	{"latency", "start50", func(config) string { return "idle: insert → handler start, p50" }, "ms", sooner},
	{"latency", "start99", func(config) string { return "idle: insert → handler start, p99" }, "ms", nil},
	{"latency", "done50", func(config) string { return "idle: insert → completion seen by a waiter, p50" }, "ms", within},
	{"latency", "done99", func(config) string { return "idle: insert → completion seen by a waiter, p99" }, "ms", nil},
}

// table prints the medians side by side as Markdown, with the spread of
// the rounds, the ratios and the targets.
func (r results) table(w io.Writer, c config) {
	fmt.Fprintf(w, "Medians of %d rounds (lowest–highest round in brackets):\n\n", c.rounds)
	fmt.Fprintln(w, "| measurement | docket | River | docket/River | target | |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- |")
	for _, m := range metrics {
		if !slices.Contains(c.workloads, m.workload) {
			continue
		}
		d, dok := median(r["docket"][m.key])
		rv, rok := median(r["river"][m.key])
		ratio, verdict, tt := "", "", ""
		if dok && rok && rv > 0 {
			ratio = fmt.Sprintf("%.2f", d/rv)
		}
		if m.target != nil {
			tt = m.target.text
			if dok && (rok || !m.target.needsRiver) {
				verdict = "NOT met"
				if m.target.met(d, rv) {
					verdict = "met"
				}
			}
		}
		fmt.Fprintf(w, "| %s | %s | %s | %s | %s | %s |\n", m.label(c),
			cell(r["docket"][m.key], m.unit), cell(r["river"][m.key], m.unit), ratio, tt, verdict)
	}
}

// cell formats a median and its spread.
func cell(vals []float64, unit string) string {
	med, ok := median(vals)
	if !ok {
		return "—"
	}
	f := func(v float64) string {
		if unit == "ms" {
			return strconv.FormatFloat(v, 'f', prec(v), 64)
		}
		return thousands(v)
	}
	s := f(med) + " " + unit
	if len(vals) > 1 {
		s += " (" + f(slices.Min(vals)) + "–" + f(slices.Max(vals)) + ")"
	}
	return s
}

// prec gives a latency three significant digits or so.
func prec(v float64) int {
	switch {
	case v >= 100:
		return 0
	case v >= 10:
		return 1
	default:
		return 2
	}
}

func median(vals []float64) (float64, bool) {
	if len(vals) == 0 {
		return 0, false
	}
	s := slices.Sorted(slices.Values(vals))
	n := len(s)
	if n%2 == 1 {
		return s[n/2], true
	}
	return (s[n/2-1] + s[n/2]) / 2, true
}

// thousands formats a figure rounded to a whole number with commas.
func thousands(v float64) string {
	s := strconv.FormatInt(int64(math.Round(v)), 10)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, ch := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(ch)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}
