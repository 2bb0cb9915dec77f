-- bench/http/run.sh: wrk script for POST /v1/queues/{queue}/jobs with a
-- small JSON body (the queue is in the URL given to wrk).
--   wrk -t2 -c50 -d10s --latency -s submit.lua http://HOST:PORT/v1/queues/bench/jobs
-- wrk counts answers other than 2xx/3xx as "Non-2xx or 3xx responses".
wrk.method = "POST"
wrk.body = '{"task":"bench","n":42}'
wrk.headers["Content-Type"] = "application/json"
