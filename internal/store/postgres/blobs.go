package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// stored is data as the store keeps it: in the row, or as a blob of chunks.
type stored struct {
	size int64
	data []byte // in the row; never nil then, so that empty data is not NULL
	blob string // the blob's name within its job, when chunked
}

// blobName names a blob: its job and its name there.
type blobName struct{ job, blob string }

// put stores d for job id: small data stays in memory for the row; larger
// data is written to blob_chunks now, a chunk at a time, under a fresh name
// starting with prefix (fresh, so that a write whose job update then fails
// never collides with data in use). A file handed over by path is removed.
func (s *Store) put(ctx context.Context, id string, d store.Data, prefix string) (stored, error) {
	var r io.Reader
	if d.Path == "" {
		if int64(len(d.Bytes)) <= s.inlineMax {
			return stored{size: int64(len(d.Bytes)), data: nonNil(d.Bytes)}, nil
		}
		r = bytes.NewReader(d.Bytes)
	} else {
		defer os.Remove(d.Path)
		f, err := os.Open(d.Path)
		if err != nil {
			return stored{}, err
		}
		defer f.Close()
		head, err := io.ReadAll(io.LimitReader(f, s.inlineMax+1))
		if err != nil {
			return stored{}, fmt.Errorf("read %s: %w", d.Path, err)
		}
		if int64(len(head)) <= s.inlineMax {
			return stored{size: int64(len(head)), data: nonNil(head)}, nil
		}
		r = io.MultiReader(bytes.NewReader(head), f)
	}
	name := prefix + "-" + rand.Text()[:12]
	n, err := s.writeChunks(ctx, id, name, r)
	if err != nil {
		s.dropBlobs([]blobName{{id, name}})
		return stored{}, err
	}
	return stored{size: n, blob: name}, nil
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// writeChunks copies r into blob_chunks with COPY, one chunk in memory at a
// time, and returns the bytes written.
func (s *Store) writeChunks(ctx context.Context, id, blob string, r io.Reader) (int64, error) {
	src := &chunkSource{r: r, buf: make([]byte, s.chunkSize), row: []any{id, blob, int32(0), nil}}
	if _, err := s.pool.CopyFrom(ctx, pgx.Identifier{"blob_chunks"}, []string{"job_id", "blob", "seq", "data"}, src); err != nil {
		return 0, fmt.Errorf("write blob %s of job %s: %w", blob, id, err)
	}
	return src.n, nil
}

// chunkSource feeds CopyFrom the chunks of a reader.
type chunkSource struct {
	r    io.Reader
	buf  []byte
	cur  int
	seq  int32
	n    int64
	row  []any
	end  bool
	fail error
}

func (c *chunkSource) Next() bool {
	if c.end {
		return false
	}
	k, err := io.ReadFull(c.r, c.buf)
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		c.end = true
	} else if err != nil {
		c.fail = err
		return false
	}
	if k == 0 {
		return false
	}
	c.cur = k
	c.n += int64(k)
	return true
}

// Values gives the current chunk; CopyFrom encodes it before asking for the
// next one, so the buffer is reused.
func (c *chunkSource) Values() ([]any, error) {
	c.row[2], c.row[3] = c.seq, c.buf[:c.cur]
	c.seq++
	return c.row, nil
}

func (c *chunkSource) Err() error { return c.fail }

// dropBlobs removes blobs written for a change that did not happen. It runs
// whatever the caller's context, which may be what ended the change.
func (s *Store) dropBlobs(blobs []blobName) {
	if len(blobs) == 0 {
		return
	}
	jobs, names := make([]string, len(blobs)), make([]string, len(blobs))
	for i, b := range blobs {
		jobs[i], names[i] = b.job, b.blob
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := s.pool.Exec(ctx, s.sql("drop_blobs"), jobs, names); err != nil {
		// Left for the job's deletion, which removes every chunk of it.
		s.log.Warn("remove unused blobs", "blobs", len(blobs), "err", err)
	}
}

// discard removes the files of inputs the store took over but will not use.
func discard(jobs []store.NewJob) {
	for _, nj := range jobs {
		if nj.Input.Path != "" {
			os.Remove(nj.Input.Path)
		}
	}
}

// open returns a reader of stored data.
func (s *Store) open(id string, size int64, data []byte, blob pgtype.Text) io.ReadCloser {
	if !blob.Valid {
		return io.NopCloser(bytes.NewReader(data))
	}
	return &chunkReader{s: s, job: id, blob: blob.String, size: size}
}

// chunkReader reads a blob a chunk at a time. Each chunk is its own query,
// so a slow reader holds no connection; reads are bounded by the store's
// life, not by the context the blob was opened with, as a file would be.
type chunkReader struct {
	s         *Store
	job, blob string
	size, off int64
	seq       int32
	buf       []byte
	pos       int
	err       error
}

// chunkTimeout bounds the read of one chunk.
const chunkTimeout = time.Minute

func (r *chunkReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.pos == len(r.buf) {
		if r.off >= r.size {
			return 0, io.EOF
		}
		if err := r.fetch(); err != nil {
			r.err = err
			return 0, err
		}
	}
	n := copy(p, r.buf[r.pos:])
	r.pos += n
	r.off += int64(n)
	return n, nil
}

func (r *chunkReader) fetch() error {
	ctx, cancel := context.WithTimeout(r.s.base, chunkTimeout)
	defer cancel()
	rows, err := r.s.pool.Query(ctx, r.s.sql("chunk"), r.job, r.blob, r.seq)
	if err != nil {
		return fmt.Errorf("postgres: read chunk %d of blob %s of job %s: %w", r.seq, r.blob, r.job, err)
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return fmt.Errorf("postgres: read chunk %d of blob %s of job %s: %w", r.seq, r.blob, r.job, err)
		}
		return fmt.Errorf("postgres: chunk %d of blob %s of job %s: %w (removed while read)", r.seq, r.blob, r.job, store.ErrNotFound)
	}
	// DriverBytes points into the connection's buffer: copy it out
	// before the rows close, into a buffer reused from chunk to chunk.
	var b pgtype.DriverBytes
	if err := rows.Scan(&b); err != nil {
		return fmt.Errorf("postgres: read chunk %d of blob %s of job %s: %w", r.seq, r.blob, r.job, err)
	}
	if len(b) == 0 {
		return fmt.Errorf("postgres: chunk %d of blob %s of job %s is empty", r.seq, r.blob, r.job)
	}
	r.buf = append(r.buf[:0], b...)
	r.pos = 0
	r.seq++
	return nil
}

func (r *chunkReader) Close() error {
	r.err = errors.New("postgres: read of a closed blob")
	r.buf = nil
	return nil
}

// artifactRow is an artifact of a completion, its data stored.
type artifactRow struct {
	blob job.Blob
	data stored
}

// saveCall is a transition's result handed to the save group.
type saveCall struct {
	next job.Job
	// was is the job the transition started from: the save happens only
	// while the stored job is still at its version.
	was *job.Job
	// checkLease also requires the lease to expire when it did (a rescue,
	// which a heartbeat must prevent).
	checkLease bool
	result     *stored // a completion's result
	artifacts  []artifactRow
	saved      bool
	err        error
	done       chan struct{}
}

// save writes a transition's result with a compare-and-set on the version
// and reports whether it was still current.
func (s *Store) save(ctx context.Context, c *saveCall) (bool, error) {
	if c.done == nil {
		c.done = make(chan struct{})
	}
	if err := s.saves.do(ctx, c, c.done); err != nil {
		return false, err
	}
	return c.saved, c.err
}

func (s *Store) runSaves(ctx context.Context, calls []*saveCall) {
	for round := range rounds(calls, func(c *saveCall) string { return c.next.ID }) {
		alone(round, func(round []*saveCall) error {
			err := s.saveRound(ctx, round)
			for _, c := range round {
				c.err = err
				if err != nil {
					c.saved = false
				}
			}
			return err
		})
		for _, c := range round {
			close(c.done)
		}
	}
}

func (s *Store) saveRound(ctx context.Context, calls []*saveCall) error {
	n := len(calls)
	var (
		ids, wasStates, states, messages         = make(refs[string], n), make(refs[string], n), make(refs[string], n), make(refs[string], n)
		wasVersions, currents, totals, versions  = make(refs[int64], n), make(refs[int64], n), make(refs[int64], n), make(refs[int64], n)
		resultSizes                              = make(refs[int64], n)
		wasLeases, runAts, starts, finishes      = make(refs[pgtype.Timestamptz], n), make(refs[pgtype.Timestamptz], n), make(refs[pgtype.Timestamptz], n), make(refs[pgtype.Timestamptz], n)
		updates, expires, leases                 = make(refs[pgtype.Timestamptz], n), make(refs[pgtype.Timestamptz], n), make(refs[pgtype.Timestamptz], n)
		attempts, artifacts                      = make(refs[int32], n), make(refs[int32], n)
		resultTypes, resultBlobs, errMsgs, codes = make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n)
		tokens, workers, wasTokens               = make(refs[pgtype.Text], n), make(refs[pgtype.Text], n), make(refs[pgtype.Text], n)
		resultData                               = make(refs[[]byte], n)
		artJobs, artNames, artTypes              refs[string]
		artSizes                                 refs[int64]
		artData                                  refs[[]byte]
		artBlobs                                 refs[pgtype.Text]
	)
	for i, c := range calls {
		j := &c.next
		ids[i], wasVersions[i], wasStates[i], wasTokens[i] = j.ID, c.was.Version, string(c.was.State), text(c.was.LeaseToken)
		if c.checkLease {
			wasLeases[i] = tz(c.was.LeaseExpiresAt)
		}
		states[i], runAts[i], attempts[i] = string(j.State), tz(j.RunAt), int32(j.Attempt)
		currents[i], totals[i], messages[i] = j.Progress.Current, j.Progress.Total, j.Progress.Message
		if j.Result != nil {
			resultTypes[i] = pgtype.Text{String: j.Result.ContentType, Valid: true}
			resultSizes[i] = j.Result.Size
		}
		if c.result != nil {
			resultData[i], resultBlobs[i] = c.result.data, text(c.result.blob)
		}
		artifacts[i] = int32(j.Artifacts)
		if j.Error != nil {
			errMsgs[i], codes[i] = pgtype.Text{String: j.Error.Message, Valid: true}, text(j.Error.Code)
		}
		starts[i], finishes[i], updates[i], expires[i] = tz(j.StartedAt), tz(j.FinishedAt), tz(j.UpdatedAt), tz(j.ExpiresAt)
		versions[i], tokens[i], leases[i], workers[i] = j.Version, text(j.LeaseToken), tz(j.LeaseExpiresAt), text(j.Worker)
		for _, a := range c.artifacts {
			artJobs, artNames, artTypes = append(artJobs, j.ID), append(artNames, a.blob.Name), append(artTypes, a.blob.ContentType)
			artSizes, artData, artBlobs = append(artSizes, a.data.size), append(artData, a.data.data), append(artBlobs, text(a.data.blob))
		}
	}
	rows, err := s.pool.Query(ctx, s.sql("save"), ids, wasVersions, wasLeases, wasStates,
		states, runAts, attempts, currents, totals, messages,
		resultTypes, resultSizes, resultData, resultBlobs, artifacts, errMsgs, codes,
		starts, finishes, updates, expires, versions, tokens, leases, workers,
		artJobs, artNames, artTypes, artSizes, artData, artBlobs, wasTokens)
	if err != nil {
		return err
	}
	byID := make(map[string]*saveCall, n)
	for _, c := range calls {
		byID[c.next.ID] = c
	}
	var id string
	_, err = pgx.ForEachRow(rows, []any{&id}, func() error {
		if c := byID[id]; c != nil {
			c.saved = true
		}
		return nil
	})
	return err
}

// Complete implements store.Store. The result and artifacts too large for a
// row are written first, then the job is saved with the rest in one
// statement; if that does not happen (the lease was lost), the data written
// goes. With a current Outcome.Known the job is not read at all, and
// completions running at the same time share one statement.
func (s *Store) Complete(ctx context.Context, id, token string, o store.Outcome) (*job.Job, error) {
	var (
		result     *stored
		resultBlob *job.Blob
		arts       []artifactRow
		written    []blobName
	)
	if o.Result != nil || len(o.Artifacts) > 0 {
		var err error
		result, resultBlob, arts, written, err = s.putOutcome(ctx, id, o)
		if err != nil {
			return nil, s.wrap("complete "+id, err)
		}
	}
	fail := func(err error) (*job.Job, error) {
		s.dropBlobs(written)
		return nil, s.wrap("complete "+id, err)
	}
	attempt := func(cur *job.Job) (*job.Job, bool, error) {
		c := &saveCall{next: *cur, was: cur, result: result, artifacts: arts}
		if o.Progress != nil {
			c.next.Progress = *o.Progress
			c.next.Progress.Message = storable(c.next.Progress.Message)
		}
		if err := job.Complete(&c.next, now(), resultBlob, len(arts), o.Retention.Truncate(time.Microsecond)); err != nil {
			return nil, false, fmt.Errorf("job %s: %w", id, err)
		}
		ok, err := s.save(ctx, c)
		return &c.next, ok, err
	}
	if k := o.Known; k != nil && k.ID == id && token != "" && k.LeaseToken == token && k.State == job.Running {
		j, ok, err := attempt(k)
		if err != nil {
			return fail(err)
		}
		if ok {
			return j, nil
		}
	}
	for range maxTries {
		cur, err := s.loadLeased(ctx, id, token)
		if err != nil {
			return fail(err)
		}
		j, ok, err := attempt(cur)
		if err != nil {
			return fail(err)
		}
		if ok {
			return j, nil
		}
	}
	return fail(fmt.Errorf("job %s changed under %d attempts in a row", id, maxTries))
}

// putOutcome stores a completion's result and artifacts (those too large
// for a row as blobs) before the job is saved, and names the blobs
// written, to be dropped if the save does not happen. It is apart from
// Complete so that Complete's frame stays small for the completions that
// bring neither: they run on the job's goroutine, whose stack would grow
// (and be copied) past its first size otherwise.
func (s *Store) putOutcome(ctx context.Context, id string, o store.Outcome) (result *stored, resultBlob *job.Blob, arts []artifactRow, written []blobName, err error) {
	unused := func(ds []store.Data) {
		for _, d := range ds {
			if d.Path != "" {
				os.Remove(d.Path)
			}
		}
	}
	fail := func(err error) (*stored, *job.Blob, []artifactRow, []blobName, error) {
		s.dropBlobs(written)
		return nil, nil, nil, nil, err
	}
	for _, a := range o.Artifacts {
		if err := store.CheckName(a.Name); err != nil {
			if o.Result != nil {
				unused([]store.Data{*o.Result})
			}
			unused(o.Artifacts)
			return fail(err)
		}
	}
	if o.Result != nil {
		st, err := s.put(ctx, id, *o.Result, "r")
		if err != nil {
			unused(o.Artifacts)
			return fail(err)
		}
		if st.blob != "" {
			written = append(written, blobName{id, st.blob})
		}
		result = &st
		resultBlob = &job.Blob{ContentType: o.Result.ContentType, Size: st.size}
	}
	// A name given twice keeps its last data, as a file written twice
	// would.
	at := map[string]int{}
	for i, a := range o.Artifacts {
		st, err := s.put(ctx, id, a, "a")
		if err != nil {
			unused(o.Artifacts[i+1:])
			return fail(err)
		}
		if st.blob != "" {
			written = append(written, blobName{id, st.blob})
		}
		row := artifactRow{blob: job.Blob{Name: a.Name, ContentType: a.ContentType, Size: st.size}, data: st}
		if k, ok := at[a.Name]; ok {
			arts[k] = row
			continue
		}
		at[a.Name] = len(arts)
		arts = append(arts, row)
	}
	return result, resultBlob, arts, written, nil
}

// OpenInput implements store.Store.
func (s *Store) OpenInput(ctx context.Context, id string) (io.ReadCloser, error) {
	var size int64
	var data []byte
	var blob pgtype.Text
	err := s.pool.QueryRow(ctx, s.sql("input"), id).Scan(&size, &data, &blob)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, s.wrap("input", fmt.Errorf("job %s: %w", id, store.ErrNotFound))
	}
	if err != nil {
		return nil, s.wrap("input of "+id, err)
	}
	return s.open(id, size, data, blob), nil
}

// OpenResult implements store.Store.
func (s *Store) OpenResult(ctx context.Context, id string) (job.Blob, io.ReadCloser, error) {
	var state string
	var ctype, blob pgtype.Text
	var size int64
	var data []byte
	err := s.pool.QueryRow(ctx, s.sql("result"), id).Scan(&state, &ctype, &size, &data, &blob)
	if errors.Is(err, pgx.ErrNoRows) {
		return job.Blob{}, nil, s.wrap("result", fmt.Errorf("job %s: %w", id, store.ErrNotFound))
	}
	if err != nil {
		return job.Blob{}, nil, s.wrap("result of "+id, err)
	}
	if job.State(state) != job.Succeeded {
		return job.Blob{}, nil, s.wrap("result", fmt.Errorf("job %s is %s: %w", id, state, store.ErrState))
	}
	if !ctype.Valid {
		return job.Blob{}, nil, s.wrap("result", fmt.Errorf("job %s has no result: %w", id, store.ErrNotFound))
	}
	return job.Blob{ContentType: ctype.String, Size: size}, s.open(id, size, data, blob), nil
}

// Artifacts implements store.Store.
func (s *Store) Artifacts(ctx context.Context, id string) ([]job.Blob, error) {
	rows, err := s.pool.Query(ctx, s.sql("artifacts"), id)
	if err != nil {
		return nil, s.wrap("artifacts of "+id, err)
	}
	out := []job.Blob{}
	exists := false
	var name, ctype pgtype.Text
	var size pgtype.Int8
	_, err = pgx.ForEachRow(rows, []any{&name, &ctype, &size}, func() error {
		exists = true
		if name.Valid {
			out = append(out, job.Blob{Name: name.String, ContentType: ctype.String, Size: size.Int64})
		}
		return nil
	})
	if err != nil {
		return nil, s.wrap("artifacts of "+id, err)
	}
	if !exists {
		return nil, s.wrap("artifacts", fmt.Errorf("job %s: %w", id, store.ErrNotFound))
	}
	return out, nil
}

// OpenArtifact implements store.Store.
func (s *Store) OpenArtifact(ctx context.Context, id, name string) (job.Blob, io.ReadCloser, error) {
	b := job.Blob{Name: name}
	var data []byte
	var blob pgtype.Text
	err := s.pool.QueryRow(ctx, s.sql("artifact"), id, name).Scan(&b.ContentType, &b.Size, &data, &blob)
	if errors.Is(err, pgx.ErrNoRows) {
		return job.Blob{}, nil, s.wrap("artifact", fmt.Errorf("artifact %s of job %s: %w", name, id, store.ErrNotFound))
	}
	if err != nil {
		return job.Blob{}, nil, s.wrap("artifact "+name+" of "+id, err)
	}
	return b, s.open(id, b.Size, data, blob), nil
}
