package web_test

// The dashboard's load measurement: a store of 100,000 jobs, the dashboard
// loaded cold and warm in headless Chromium, the API's list queries timed,
// and their query plans. It is a measurement, not a test: it runs only with
// -dashboard.load (docs/BENCHMARKS.md, "Dashboard", has the command and
// the figures; docs/DASHBOARD.md the plans).

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/jackc/pgx/v5"
	_ "modernc.org/sqlite" // database/sql driver "sqlite", for the plans

	"github.com/docket/docket/internal/api"
	"github.com/docket/docket/internal/engine"
	"github.com/docket/docket/internal/store"
	"github.com/docket/docket/internal/store/postgres"
	"github.com/docket/docket/internal/store/postgres/pgtest"
	"github.com/docket/docket/internal/store/sqlite"
	"github.com/docket/docket/web"
)

var (
	loadRun  = flag.Bool("dashboard.load", false, "run the dashboard's load measurement (slow: fills a store)")
	loadJobs = flag.Int("dashboard.jobs", 100_000, "jobs in the store of the load measurement")
	loadRuns = flag.Int("dashboard.runs", 5, "page loads measured, cold and warm each")
)

// The jobs are spread as a busy installation's would be: most finished,
// over three queues of unequal size and four owners.
var (
	loadQueues = []string{"echo", "echo", "echo", "echo", "echo", "echo", "thumbs", "thumbs", "thumbs", "reports"}
	loadOwners = []string{"alice", "bob", "carol", "dave"}
)

func fill(ctx context.Context, t *testing.T, st store.Store, n int) {
	t.Helper()
	const batch = 1000
	for i := 0; i < n; i += batch {
		var jobs []store.NewJob
		for k := i; k < min(i+batch, n); k++ {
			in := fmt.Appendf(nil, `{"n": %d}`, k)
			labels := map[string]string{"batch": fmt.Sprint(k / 1000)}
			if k%10 == 0 {
				labels["doc"] = fmt.Sprintf("d%d", k/10)
			}
			// Owners take turns by tens, so that every owner has jobs of
			// every queue.
			jobs = append(jobs, store.NewJob{Queue: loadQueues[k%len(loadQueues)], Owner: loadOwners[k/10%len(loadOwners)],
				Input: jsonInput(in), MaxAttempts: 3, Labels: labels})
		}
		if _, err := st.Insert(ctx, jobs); err != nil {
			t.Fatal(err)
		}
	}
}

// listQuery is one GET /v1/jobs the dashboard makes, and the SQL the
// store runs for it (its column list aside, which does not change the plan).
type listQuery struct {
	what, url, token string
	sqlite, pg       string // the WHERE conditions (after the store's base)
	args             []any
}

func TestDashboardLoad(t *testing.T) {
	if !*loadRun {
		t.Skip("a measurement: run it with -dashboard.load (see docs/BENCHMARKS.md)")
	}
	requireChromium(t)
	ctx := context.Background()
	var report strings.Builder
	out := func(format string, args ...any) {
		fmt.Fprintf(&report, format+"\n", args...)
	}
	defer func() {
		t.Log("\n" + report.String())
		if path := os.Getenv("DOCKET_BENCH_OUT"); path != "" {
			os.WriteFile(path, []byte(report.String()), 0o644)
		}
	}()

	dir := t.TempDir()
	st, err := sqlite.Open(ctx, sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	fill(ctx, t, st, *loadJobs)
	out("filled a SQLite store with %d jobs in %v", *loadJobs, time.Since(start).Round(time.Millisecond))
	st.Close()
	// Insert makes queued jobs; most jobs of a real store have finished.
	// Move them on in place, as their workers would have.
	db, err := sql.Open("sqlite", filepath.Join(dir, "docket.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, q := range []string{
		`UPDATE jobs SET state = CASE WHEN rowid % 100 < 90 THEN 'succeeded' WHEN rowid % 100 < 94 THEN 'failed'
			WHEN rowid % 100 < 95 THEN 'canceled' ELSE 'queued' END`,
		`UPDATE jobs SET attempt = 1, started_at = created_at + 1000, finished_at = created_at + 250000,
			updated_at = created_at + 250000, version = 4, progress_current = 1, progress_total = 1 WHERE state != 'queued'`,
		`UPDATE jobs SET result_type = 'application/json', result_size = input_size, result_data = input_data WHERE state = 'succeeded'`,
		`UPDATE jobs SET error_message = 'the scanner returned no pages', error_code = 'handler_error' WHERE state = 'failed'`,
		`DELETE FROM queue_counts`,
		`INSERT INTO queue_counts (queue, state, n) SELECT queue, state, count(*) FROM jobs GROUP BY queue, state`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var middle string
	db.QueryRowContext(ctx, `SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET ?`, *loadJobs/2).Scan(&middle)

	st, err = sqlite.Open(ctx, sqlite.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	e, err := engine.New(engine.Options{Store: st, TempDir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{"echo", "thumbs", "reports"} {
		// No workers: the store stays as filled while it is measured.
		if err := e.AddQueue(engine.Queue{Name: q, MaxAttempts: 3}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.Start(); err != nil {
		t.Fatal(err)
	}
	defer e.Stop(ctx)
	a := api.New(api.Config{Engine: e, Logger: log, Apps: []api.App{web.App}, Tokens: []api.Token{
		{Owner: "ops", Scopes: []string{api.ScopeAdmin}, Hash: sha256.Sum256([]byte(adminToken))},
		{Owner: "alice", Scopes: []string{api.ScopeRead, api.ScopeSubmit}, Hash: sha256.Sum256([]byte(aliceToken))},
	}})
	hs := httptest.NewServer(a)
	defer hs.Close()
	defer hs.CloseClientConnections() // event streams a failed step left open
	defer a.Close()

	measurePage(t, hs.URL, out)

	queries := []listQuery{
		{what: "all jobs (admin), the first page", url: "/v1/jobs?limit=50", token: adminToken},
		{what: "one owner's jobs (every non-admin list)", url: "/v1/jobs?limit=50", token: aliceToken,
			sqlite: "owner = ?", pg: "owner = $1", args: []any{"alice"}},
		{what: "queue filter", url: "/v1/jobs?queue=thumbs&limit=50", token: adminToken,
			sqlite: "queue = ?", pg: "queue = $1", args: []any{"thumbs"}},
		{what: "state filter (failed)", url: "/v1/jobs?state=failed&limit=50", token: adminToken,
			sqlite: "state IN (?)", pg: "state = ANY($1)", args: []any{"failed"}},
		{what: "state filter matching nothing (running)", url: "/v1/jobs?state=running&limit=50", token: adminToken,
			sqlite: "state IN (?)", pg: "state = ANY($1)", args: []any{"running"}},
		{what: "queue and state", url: "/v1/jobs?queue=reports&state=failed&limit=50", token: adminToken,
			sqlite: "queue = ? AND state IN (?)", pg: "queue = $1 AND state = ANY($2)", args: []any{"reports", "failed"}},
		{what: "owner and queue", url: "/v1/jobs?queue=reports&limit=50", token: aliceToken,
			sqlite: "owner = ? AND queue = ?", pg: "owner = $1 AND queue = $2", args: []any{"alice", "reports"}},
		{what: "label filter", url: "/v1/jobs?label=doc:d4321&limit=50", token: adminToken,
			sqlite: "EXISTS (SELECT 1 FROM json_each(jobs.labels) WHERE json_each.key = ? AND json_each.value = ?)",
			pg:     "labels @> $1::jsonb", args: []any{"doc", "d4321"}},
		{what: "a page deep in the list (cursor)", url: "/v1/jobs?limit=50&cursor=" + middle, token: adminToken,
			sqlite: "id < ?", pg: "id < $1", args: []any{middle}},
	}
	out("\n### API latency over %d jobs (SQLite), 20 requests each", *loadJobs)
	out("\n| request | median | max |\n| --- | --- | --- |")
	for _, u := range []struct{ url, token string }{{"/v1/queues", adminToken}} {
		med, mx := timeGet(t, hs.URL+u.url, u.token)
		out("| `GET %s` | %v | %v |", u.url, med, mx)
	}
	for _, q := range queries {
		med, mx := timeGet(t, hs.URL+q.url, q.token)
		who := "admin"
		if q.token == aliceToken {
			who = "alice"
		}
		out("| `GET %s` (%s) | %v | %v |", strings.Replace(q.url, middle, "…", 1), who, med, mx)
	}

	out("\n### SQLite query plans (EXPLAIN QUERY PLAN)")
	for _, q := range queries {
		sqlq := "SELECT * FROM jobs"
		if q.sqlite != "" {
			sqlq += " WHERE " + q.sqlite
		}
		sqlq += " ORDER BY id DESC LIMIT 51"
		rows, err := db.QueryContext(ctx, "EXPLAIN QUERY PLAN "+sqlq, q.args...)
		if err != nil {
			t.Fatalf("%s: %v", sqlq, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, notused int
			var detail string
			rows.Scan(&id, &parent, &notused, &detail)
			plan = append(plan, detail)
		}
		rows.Close()
		out("\n%s: `%s`\n\n    %s", q.what, sqlq, strings.Join(plan, "\n    "))
	}
	var counts []string
	rows, _ := db.QueryContext(ctx, "EXPLAIN QUERY PLAN SELECT queue, state, n FROM queue_counts WHERE n > 0 ORDER BY queue")
	for rows.Next() {
		var id, parent, notused int
		var detail string
		rows.Scan(&id, &parent, &notused, &detail)
		counts = append(counts, detail)
	}
	rows.Close()
	out("\nqueue counts (`GET /v1/queues`): `SELECT queue, state, n FROM queue_counts WHERE n > 0 ORDER BY queue`\n\n    %s", strings.Join(counts, "\n    "))

	t.Run("postgres", func(t *testing.T) { explainPostgres(t, queries, out) })
}

func jsonInput(b []byte) store.Data {
	d := store.Data{Bytes: b}
	d.ContentType, d.Size = "application/json", int64(len(b))
	return d
}

// timeGet times 20 GETs of url, after one to warm up; it returns the
// median and the slowest.
func timeGet(t *testing.T, url, token string) (time.Duration, time.Duration) {
	t.Helper()
	var ds []time.Duration
	for i := range 21 {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		start := time.Now()
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, res.Body)
		res.Body.Close()
		if res.StatusCode != 200 {
			t.Fatalf("GET %s: %d", url, res.StatusCode)
		}
		if i > 0 {
			ds = append(ds, time.Since(start))
		}
	}
	slices.Sort(ds)
	r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
	return r(ds[len(ds)/2]), r(ds[len(ds)-1])
}

// pageLoad is what one load of the jobs list cost.
type pageLoad struct {
	Doc, Static, API, Files int     // bytes transferred (headers included), files fetched
	Usable                  float64 // ms from navigation start to the first page of jobs on screen
	Wall                    time.Duration
	Rows                    int
}

// measurePage loads #/jobs cold (an empty cache, in a fresh browser
// context) and warm (again, in the same one), signed in as the admin, who
// sees every job.
func measurePage(t *testing.T, base string, out func(string, ...any)) {
	parent := startBrowser(t)
	var cold, warm []pageLoad
	for range *loadRuns {
		func() {
			ctx, cancel := chromedp.NewContext(parent, chromedp.WithNewBrowserContext())
			defer cancel()
			if err := chromedp.Do(ctx); err != nil {
				t.Fatal(err)
			}
			p := &page{t: t, ctx: ctx}
			// The token is in the tab already, as after a sign-in.
			p.do(chromedp.Navigate(base + "/healthz"))
			eval[chromedp.Void](p, fmt.Sprintf(`sessionStorage.setItem('docket.token', %q)`, adminToken))
			cold = append(cold, loadOnce(p, base))
			warm = append(warm, loadOnce(p, base))
		}()
	}
	med := func(ls []pageLoad) pageLoad {
		slices.SortFunc(ls, func(a, b pageLoad) int { return int(a.Wall - b.Wall) })
		return ls[len(ls)/2]
	}
	c, w := med(cold), med(warm)
	out("\n### Dashboard load, `#/jobs` as admin over %d jobs, median of %d", *loadJobs, *loadRuns)
	out("\n| load | files | page and assets | API answers | total | jobs list on screen (navigation start →) | wall, from Go |")
	out("| --- | --- | --- | --- | --- | --- | --- |")
	for _, l := range []struct {
		name string
		pageLoad
	}{{"cold (empty cache)", c}, {"warm (cached)", w}} {
		out("| %s | %d | %.1f KB | %.1f KB | %.1f KB | %.0f ms | %v |", l.name, l.Files, float64(l.Doc+l.Static)/1000,
			float64(l.API)/1000, float64(l.Doc+l.Static+l.API)/1000, l.Usable, l.Wall.Round(time.Millisecond))
	}
	if c.Rows != 50 {
		t.Errorf("the list shows %d rows, want a page of 50", c.Rows)
	}
	if c.Doc+c.Static > firstLoadBudget {
		t.Errorf("the first load transferred %d bytes of page and assets, over %d", c.Doc+c.Static, firstLoadBudget)
	}
}

// loadOnce loads the jobs list anew, from another page of the origin (as a
// returning user would, not as a reload, which revalidates).
func loadOnce(p *page, base string) pageLoad {
	p.do(chromedp.Navigate(base + "/healthz"))
	start := time.Now()
	p.do(chromedp.Navigate(base + "/#/jobs"))
	p.wait("the jobs list", `performance.getEntriesByName('docket:jobs-rendered').length > 0`)
	wall := time.Since(start)
	l := eval[pageLoad](p, `(() => {
		const nav = performance.getEntriesByType('navigation')[0];
		const res = performance.getEntriesByType('resource');
		const sum = (xs) => xs.reduce((n, r) => n + r.transferSize, 0);
		const api = res.filter((r) => r.initiatorType === 'fetch');
		const files = res.filter((r) => r.initiatorType !== 'fetch');
		return {Doc: nav.transferSize, Static: sum(files), API: sum(api), Files: files.length + 1,
			Usable: performance.getEntriesByName('docket:jobs-rendered')[0].startTime,
			Rows: document.querySelectorAll('tbody tr[data-id]').length};
	})()`)
	l.Wall = wall
	return l
}

// explainPostgres fills a PostgreSQL schema the same way and shows the
// plans of the same list queries, as EXPLAIN ANALYZE runs them.
func explainPostgres(t *testing.T, queries []listQuery, out func(string, ...any)) {
	ctx := context.Background()
	url := pgtest.URL(t)
	st, err := postgres.Open(ctx, postgres.Options{URL: url})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Now()
	fill(ctx, t, st, *loadJobs)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, q := range []string{
		`UPDATE jobs SET state = CASE WHEN n < 90 THEN 'succeeded' WHEN n < 94 THEN 'failed' WHEN n < 95 THEN 'canceled' ELSE 'queued' END
			FROM (SELECT id AS jid, (row_number() OVER (ORDER BY id)) % 100 AS n FROM jobs) r WHERE jobs.id = r.jid`,
		`UPDATE jobs SET attempt = 1, started_at = created_at, finished_at = created_at + interval '250 ms',
			updated_at = created_at + interval '250 ms', version = 4 WHERE state != 'queued'`,
		`VACUUM ANALYZE jobs`,
	} {
		if _, err := conn.Exec(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	var middle string
	conn.QueryRow(ctx, `SELECT id FROM jobs ORDER BY id LIMIT 1 OFFSET $1`, *loadJobs/2).Scan(&middle)
	out("\n### PostgreSQL query plans (EXPLAIN ANALYZE, %d jobs, filled in %v)", *loadJobs, time.Since(start).Round(time.Millisecond))
	for _, q := range queries {
		sqlq := "SELECT * FROM jobs WHERE true"
		if q.pg != "" {
			sqlq += " AND " + q.pg
		}
		sqlq += " ORDER BY id DESC LIMIT 51"
		args := q.args
		if strings.Contains(q.pg, "ANY") {
			args = slices.Clone(args)
			for i, a := range args {
				if i == len(args)-1 {
					args[i] = []string{a.(string)}
				}
			}
		}
		if q.pg == "id < $1" {
			args = []any{middle}
		}
		if strings.Contains(q.pg, "@>") {
			args = []any{fmt.Sprintf(`{%q: %q}`, q.args[0], q.args[1])}
		}
		rows, err := conn.Query(ctx, "EXPLAIN (ANALYZE, COSTS OFF) "+sqlq, args...)
		if err != nil {
			t.Fatalf("%s: %v", sqlq, err)
		}
		var plan []string
		for rows.Next() {
			var line string
			rows.Scan(&line)
			plan = append(plan, line)
		}
		rows.Close()
		out("\n%s: `%s`\n\n    %s", q.what, sqlq, strings.Join(plan, "\n    "))
	}
}
