package sqlite

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/docket/docket/internal/job"
	"github.com/docket/docket/internal/store"
)

// Files live under blobs/<last two characters of the id>/<id>/: the id's
// head is a timestamp, its tail is random, so the tail spreads jobs evenly
// over the 256 shard folders. Paths kept in the database are relative to
// the data directory, so the directory can be moved.

func (s *Store) jobDir(id string) string {
	shard := "xx"
	if len(id) >= 2 {
		shard = id[len(id)-2:]
	}
	return filepath.Join(s.blobs, shard, id)
}

func (s *Store) rel(path string) string {
	r, err := filepath.Rel(s.dir, path)
	if err != nil {
		return path
	}
	return r
}

func (s *Store) abs(rel string) string {
	if filepath.IsAbs(rel) {
		return rel
	}
	return filepath.Join(s.dir, rel)
}

// removeOutputs removes the output folders holding the given result or
// artifact files (paths relative to the data directory).
func (s *Store) removeOutputs(rels []string) {
	for _, r := range rels {
		os.RemoveAll(filepath.Dir(s.abs(r)))
	}
}

// place stores d either inline (returned as bytes) or as the file dir/name
// (returned as a path relative to the data directory), and gives its size.
// A file handed over by path is renamed into place when it can be.
func (s *Store) place(d store.Data, dir, name string) (data []byte, rel string, size int64, err error) {
	if d.Path == "" {
		if int64(len(d.Bytes)) <= s.inlineMax {
			return d.Bytes, "", int64(len(d.Bytes)), nil
		}
		dst := filepath.Join(dir, name)
		if err := s.writeFile(dst, d.Bytes); err != nil {
			return nil, "", 0, err
		}
		return nil, s.rel(dst), int64(len(d.Bytes)), nil
	}
	st, err := os.Stat(d.Path)
	if err != nil {
		return nil, "", 0, err
	}
	if st.Size() <= s.inlineMax {
		b, err := os.ReadFile(d.Path)
		if err != nil {
			return nil, "", 0, err
		}
		os.Remove(d.Path)
		return b, "", int64(len(b)), nil
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, "", 0, err
	}
	dst := filepath.Join(dir, name)
	if err := os.Rename(d.Path, dst); err != nil {
		// Another file system: copy, then drop the original.
		if err := s.copyFile(dst, d.Path); err != nil {
			return nil, "", 0, err
		}
		os.Remove(d.Path)
	} else if s.sync {
		if err := syncPath(dst); err != nil {
			return nil, "", 0, err
		}
	}
	return nil, s.rel(dst), st.Size(), nil
}

func (s *Store) writeFile(dst string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		return err
	}
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return s.finishFile(f, err)
}

func (s *Store) copyFile(dst, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	_, err = io.Copy(f, in)
	return s.finishFile(f, err)
}

func (s *Store) finishFile(f *os.File, err error) error {
	if err == nil && s.sync {
		err = f.Sync()
	}
	return errors.Join(err, f.Close())
}

func syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	return errors.Join(f.Sync(), f.Close())
}

type placed struct {
	blob job.Blob
	data []byte
	path string
}

// Complete implements store.Store. The result and artifacts are put in a
// folder of their own before the transaction; if the lease turns out to be
// lost, the folder goes and nothing else changed.
func (s *Store) Complete(ctx context.Context, id, token string, o store.Outcome) (*job.Job, error) {
	for _, a := range o.Artifacts {
		if err := store.CheckName(a.Name); err != nil {
			return nil, fmt.Errorf("sqlite: complete %s: %w", id, err)
		}
	}
	out := filepath.Join(s.jobDir(id), "out-"+rand.Text()[:10])
	fail := func(err error) (*job.Job, error) {
		os.RemoveAll(out)
		return nil, fmt.Errorf("sqlite: complete %s: %w", id, err)
	}
	var result *placed
	if o.Result != nil {
		data, rel, size, err := s.place(*o.Result, out, "result")
		if err != nil {
			return fail(err)
		}
		result = &placed{blob: job.Blob{ContentType: o.Result.ContentType, Size: size}, data: data, path: rel}
	}
	arts := make([]placed, 0, len(o.Artifacts))
	for _, a := range o.Artifacts {
		data, rel, size, err := s.place(a, out, "a-"+a.Name)
		if err != nil {
			return fail(err)
		}
		arts = append(arts, placed{blob: job.Blob{Name: a.Name, ContentType: a.ContentType, Size: size}, data: data, path: rel})
	}
	var res *job.Job
	var rdata, rpath any
	if result != nil {
		rdata = nonNil(result.data)
		if result.path != "" {
			rdata, rpath = nil, result.path
		}
	}
	// Completion is the hot path: when the caller knows the job's current
	// version, job.Complete is applied to that and written with a
	// compare-and-set on version and lease, with no read. Otherwise the
	// job is read first.
	do := func(w *wtx) error {
		var j *job.Job
		if k := o.Known; k != nil && k.ID == id && k.LeaseToken == token && k.State == job.Running {
			next, err := complete(*k, o.Progress, result, len(arts), o.Retention)
			if err != nil {
				return err
			}
			ok, err := w.saveWith(&next, "result_data = ?, result_path = ?", []any{rdata, rpath},
				"AND state = 'running' AND lease_token = ? AND version = ?", token, k.Version)
			if err != nil {
				return err
			}
			if ok {
				j = &next
			}
		}
		if j == nil {
			cur, err := w.loadLeased(id, token)
			if err != nil {
				return err
			}
			next, err := complete(*cur, o.Progress, result, len(arts), o.Retention)
			if err != nil {
				return err
			}
			if _, err := w.saveWith(&next, "result_data = ?, result_path = ?", []any{rdata, rpath}, ""); err != nil {
				return err
			}
			j = &next
		}
		w.move(j.Queue, job.Running, job.Succeeded)
		for _, a := range arts {
			var data, path any = nonNil(a.data), nil
			if a.path != "" {
				data, path = nil, a.path
			}
			if _, err := w.exec(`INSERT OR REPLACE INTO artifacts (job_id, name, content_type, size, data, path)
				VALUES (?, ?, ?, ?, ?, ?)`, id, a.blob.Name, a.blob.ContentType, a.blob.Size, data, path); err != nil {
				return err
			}
		}
		res = j
		return nil
	}
	var err error
	if len(arts) > 0 {
		err = s.writeMulti(ctx, do, nil)
	} else {
		err = s.write(ctx, do, nil)
	}
	if err != nil {
		return fail(err)
	}
	return res, nil
}

// complete applies job.Complete with the outcome's data.
func complete(j job.Job, p *job.Progress, result *placed, artifacts int, retention time.Duration) (job.Job, error) {
	if p != nil {
		j.Progress = *p
	}
	var rb *job.Blob
	if result != nil {
		rb = &result.blob
	}
	// Times are kept at microsecond precision; truncate now so that the
	// job returned equals the job stored.
	err := job.Complete(&j, fromUS(us(time.Now())), rb, artifacts, retention.Truncate(time.Microsecond))
	return j, err
}

func nonNil(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return b
}

// OpenResult implements store.Store.
func (s *Store) OpenResult(ctx context.Context, id string) (job.Blob, io.ReadCloser, error) {
	var state string
	var ctype sql.NullString
	var size int64
	var data []byte
	var path sql.NullString
	err := s.readRow(ctx, "SELECT state, result_type, result_size, result_data, result_path FROM jobs WHERE id = ?", id).
		Scan(&state, &ctype, &size, &data, &path)
	if errors.Is(err, sql.ErrNoRows) {
		return job.Blob{}, nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	if err != nil {
		return job.Blob{}, nil, fmt.Errorf("sqlite: result of %s: %w", id, err)
	}
	if job.State(state) != job.Succeeded {
		return job.Blob{}, nil, fmt.Errorf("job %s is %s: %w", id, state, store.ErrState)
	}
	if !ctype.Valid {
		return job.Blob{}, nil, fmt.Errorf("job %s has no result: %w", id, store.ErrNotFound)
	}
	rc, err := s.openData(data, path)
	if err != nil {
		return job.Blob{}, nil, err
	}
	return job.Blob{ContentType: ctype.String, Size: size}, rc, nil
}

// Artifacts implements store.Store.
func (s *Store) Artifacts(ctx context.Context, id string) ([]job.Blob, error) {
	var n int
	if err := s.readRow(ctx, "SELECT count(*) FROM jobs WHERE id = ?", id).Scan(&n); err != nil {
		return nil, fmt.Errorf("sqlite: artifacts of %s: %w", id, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("job %s: %w", id, store.ErrNotFound)
	}
	rows, err := s.read(ctx, "SELECT name, content_type, size FROM artifacts WHERE job_id = ? ORDER BY name", id)
	if err != nil {
		return nil, fmt.Errorf("sqlite: artifacts of %s: %w", id, err)
	}
	defer rows.Close()
	out := []job.Blob{}
	for rows.Next() {
		var b job.Blob
		if err := rows.Scan(&b.Name, &b.ContentType, &b.Size); err != nil {
			return nil, fmt.Errorf("sqlite: artifacts of %s: %w", id, err)
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// OpenArtifact implements store.Store.
func (s *Store) OpenArtifact(ctx context.Context, id, name string) (job.Blob, io.ReadCloser, error) {
	b := job.Blob{Name: name}
	var data []byte
	var path sql.NullString
	err := s.readRow(ctx, "SELECT content_type, size, data, path FROM artifacts WHERE job_id = ? AND name = ?", id, name).
		Scan(&b.ContentType, &b.Size, &data, &path)
	if errors.Is(err, sql.ErrNoRows) {
		return job.Blob{}, nil, fmt.Errorf("artifact %s of job %s: %w", name, id, store.ErrNotFound)
	}
	if err != nil {
		return job.Blob{}, nil, fmt.Errorf("sqlite: artifact %s of %s: %w", name, id, err)
	}
	rc, err := s.openData(data, path)
	if err != nil {
		return job.Blob{}, nil, err
	}
	return b, rc, nil
}
