-- bench/http/run.sh: wrk script for an asynchronous request through the
-- gateway: a POST with X-Async-Request: true, which docket records as a job
-- of the http queue and answers 202.
--   wrk -t2 -c50 -d10s --latency -s async.lua http://HOST:PORT/reports
wrk.method = "POST"
wrk.body = '{"report":"bench","n":42}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-Async-Request"] = "true"
