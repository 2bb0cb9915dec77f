-- Jobs without an owner (a server in open mode, or jobs submitted through
-- the Go API) are listed newest first through the primary key; only jobs
-- with an owner need jobs_owner to be listed without reading the others.
-- Every claim and completion rewrites a job's row, so an index entry that
-- no list needs cost every unowned job two index insertions.
DROP INDEX jobs_owner;
CREATE INDEX jobs_owner ON jobs (owner, id) WHERE owner <> '';
