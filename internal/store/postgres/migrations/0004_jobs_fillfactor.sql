-- A job's row is written three times in a few milliseconds: inserted,
-- claimed, completed. On a full page (the default fillfactor of 100) each
-- rewrite goes to another page: the server looks for room, extends the
-- table under a lock, logs a lock of the old row besides the update, and
-- the table grows threefold while a backlog drains. Leaving half of each
-- page free when rows are inserted keeps the rewrites of a row on its page
-- (what the rewrites leave behind is pruned as the page fills), and the
-- log records shorter. It costs room: a table of finished jobs takes up to
-- twice the pages.
ALTER TABLE jobs SET (fillfactor = 50);
