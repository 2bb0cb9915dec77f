-- Every change of a job rewrites its row, and a btree on updated_at took a
-- new entry each time: about a sixth of the cost of a claim or a completion.
-- Only a watcher resynchronising after a lost connection reads by
-- updated_at, rarely and for a short stretch of time, so a BRIN index,
-- whose upkeep is next to nothing, serves it well enough: at worst it reads
-- the page ranges whose rows changed at about that time.
DROP INDEX jobs_updated;
CREATE INDEX jobs_updated ON jobs USING brin (updated_at) WITH (pages_per_range = 16);
