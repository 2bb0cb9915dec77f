#!/usr/bin/env python3
"""A docket remote worker in Python 3, standard library only.

It claims jobs of one queue over HTTP, keeps each job's lease alive with
heartbeats from a second thread, reports progress, and completes the job
with a result, or fails it (for good) when the input is unusable. The
protocol is described in docs/WORKERS.md.

The work itself is a stand-in: the input is JSON such as

    {"text": "hello remote world", "steps": 3, "sleep": 0.5}

and the result is {"words": 3, "upper": "HELLO REMOTE WORLD"}, after
`steps` progress steps of `sleep` seconds each. An input that is not a
JSON object with a string "text" fails the job with code "bad_input".

Configuration comes from the environment:

    DOCKET_SERVER   base URL of docket (default http://127.0.0.1:8080)
    DOCKET_TOKEN    a token with the worker scope (none in open mode)
    DOCKET_QUEUE    the queue to serve (default "remote")

    python3 worker.py                     # serve until Ctrl-C
    python3 worker.py --max-jobs 10       # stop after 10 jobs
    python3 worker.py --exit-when-idle    # stop at the first empty claim
"""

import argparse
import base64
import json
import os
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request


def log(*args):
    print("worker:", *args, file=sys.stderr, flush=True)


class LeaseLost(Exception):
    """The worker no longer holds the job: stop working on it.

    reason is why ("canceled", "deleted", "expired", "deadline_exceeded",
    "finished"), from the problem's "code".
    """

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason


class Problem(Exception):
    """Any other error answer of docket (an RFC 9457 problem)."""

    def __init__(self, status, doc):
        super().__init__("%s %s: %s" % (status, doc.get("type", ""), doc.get("detail", "")))
        self.status = status
        self.doc = doc


class Docket:
    """The remote-worker calls of docket's HTTP API."""

    def __init__(self, server, token):
        self.server = server.rstrip("/")
        self.token = token

    def call(self, method, path, body=None, content_type=None, lease=None, timeout=30):
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
        if lease:
            headers["Docket-Lease"] = lease
        if isinstance(body, (dict, list)):
            body, content_type = json.dumps(body).encode(), "application/json"
        if content_type:
            headers["Content-Type"] = content_type
        req = urllib.request.Request(self.server + path, data=body, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            raw = err.read()
            try:
                doc = json.loads(raw)
            except ValueError:
                doc = {"detail": raw.decode(errors="replace")}
            if doc.get("type") == "urn:docket:problem:lease-lost":
                raise LeaseLost(doc.get("code", ""), doc.get("detail", "")) from None
            raise Problem(err.code, doc) from None

    def claim(self, queue, wait, lease=None, worker=None):
        """Wait up to `wait` seconds for a job; None when none came."""
        query = {"wait": str(wait)}
        if lease:
            query["lease"] = str(lease)
        if worker:
            query["worker"] = worker
        path = "/v1/queues/%s/claim?%s" % (urllib.parse.quote(queue, safe=""), urllib.parse.urlencode(query))
        # The server holds the request for up to `wait` seconds.
        status, body = self.call("POST", path, timeout=wait + 15)
        if status == 204:
            return None
        return json.loads(body)

    def input(self, job):
        """The job's input bytes: inline when small, else streamed."""
        data = job["input"].get("data")
        if data is not None:
            return base64.b64decode(data)
        _, body = self.call("GET", job["input"]["url"], lease=job["lease"]["token"], timeout=300)
        return body

    def heartbeat(self, job):
        self.call("POST", "/v1/jobs/%s/heartbeat" % job["id"], lease=job["lease"]["token"])

    def progress(self, job, current, total, message=""):
        body = {"current": current, "total": total, "message": message}
        self.call("POST", "/v1/jobs/%s/progress" % job["id"], body, lease=job["lease"]["token"])

    def complete(self, job, result, content_type):
        _, body = self.call("POST", "/v1/jobs/%s/complete" % job["id"], result, content_type,
                            lease=job["lease"]["token"], timeout=300)
        return json.loads(body)

    def fail(self, job, message, retryable=True, code=None):
        body = {"error": message, "retryable": retryable}
        if code:
            body["code"] = code
        _, raw = self.call("POST", "/v1/jobs/%s/fail" % job["id"], body, lease=job["lease"]["token"])
        return json.loads(raw)


class Heartbeat(threading.Thread):
    """Renews a job's lease until stopped; notes when the lease is lost."""

    def __init__(self, api, job):
        super().__init__(daemon=True)
        self.api = api
        self.job = job
        self.every = max(job["lease"]["heartbeat_seconds"], 0.1)
        self.stopped = threading.Event()
        self.lost = None  # a LeaseLost once the server said so

    def run(self):
        while not self.stopped.wait(self.every):
            try:
                self.api.heartbeat(self.job)
            except LeaseLost as err:
                self.lost = err
                return
            except (OSError, Problem) as err:
                # A passing network error: the lease outlives a few of them.
                log("heartbeat of", self.job["id"], "failed:", err)

    def check(self):
        if self.lost is not None:
            raise self.lost

    def stop(self):
        self.stopped.set()
        self.join()


class BadInput(Exception):
    pass


def work(api, job, beat, data):
    """The work itself: count words, slowly, reporting progress."""
    try:
        ask = json.loads(data)
    except ValueError as err:
        raise BadInput("input is not JSON: %s" % err) from None
    if not isinstance(ask, dict) or not isinstance(ask.get("text"), str):
        raise BadInput('input must be a JSON object with a string "text"')
    steps = int(ask.get("steps", 3))
    pause = float(ask.get("sleep", 0.1))
    for i in range(1, steps + 1):
        time.sleep(pause)
        beat.check()  # canceled meanwhile? then stop here
        api.progress(job, i, steps, "step %d of %d" % (i, steps))
    text = ask["text"]
    return {"words": len(text.split()), "upper": text.upper()}


def handle(api, job):
    """Runs one claimed job to its end; returns what became of it."""
    log("job", job["id"], "attempt", job["attempt"], "of", job["max_attempts"])
    beat = Heartbeat(api, job)
    beat.start()
    try:
        result = work(api, job, beat, api.input(job))
        beat.check()
        done = api.complete(job, json.dumps(result).encode(), "application/json")
        return done["state"]
    except LeaseLost as err:
        # Canceled, deleted, or taken back: nobody wants the result now.
        log("job", job["id"], "lost:", err.reason, err)
        return "lost"
    except BadInput as err:
        # Another attempt would fail the same way: fail for good.
        return report_failure(api, job, str(err), False, "bad_input")
    except KeyboardInterrupt:
        # Stopped on purpose: let the job be retried soon, not after its lease.
        try:
            report_failure(api, job, "worker stopped", True, "worker_stopped")
        except (Problem, OSError):
            pass
        raise
    except Exception as err:  # a bug or an outage: worth another attempt
        return report_failure(api, job, "%s: %s" % (type(err).__name__, err), True, "worker_error")
    finally:
        beat.stop()


def report_failure(api, job, message, retryable, code):
    try:
        return api.fail(job, message, retryable=retryable, code=code)["state"]
    except LeaseLost:
        return "lost"


def main(argv=None):
    p = argparse.ArgumentParser(description="A docket remote worker (see docs/WORKERS.md).")
    p.add_argument("--max-jobs", type=int, default=0, help="exit after this many jobs (0: never)")
    p.add_argument("--exit-when-idle", action="store_true", help="exit when a claim comes back empty")
    p.add_argument("--wait", type=float, default=30, help="seconds a claim waits for a job (at most 60)")
    p.add_argument("--lease", type=float, default=None, help="lease in seconds (default: the server's)")
    p.add_argument("--name", default="worker-py-%d" % os.getpid(), help="this worker's name in leases")
    args = p.parse_args(argv)

    api = Docket(os.environ.get("DOCKET_SERVER", "http://127.0.0.1:8080"), os.environ.get("DOCKET_TOKEN", ""))
    queue = os.environ.get("DOCKET_QUEUE", "remote")
    log("serving queue", queue, "of", api.server)
    handled, backoff = 0, 1.0
    try:
        while args.max_jobs <= 0 or handled < args.max_jobs:
            try:
                job = api.claim(queue, args.wait, args.lease, args.name)
            except (OSError, Problem) as err:
                if isinstance(err, Problem) and err.status in (401, 403, 404):
                    log("claim refused:", err)
                    return 2
                log("claim failed:", err, "- retrying in %.0fs" % backoff)
                time.sleep(backoff)
                backoff = min(backoff * 2, 30)
                continue
            backoff = 1.0
            if job is None:
                if args.exit_when_idle:
                    break
                continue
            try:
                state = handle(api, job)
            except (OSError, Problem) as err:
                # Not even the failure could be reported: the lease lapses
                # and docket gives the job to another worker.
                state = "unreported (%s)" % err
            handled += 1
            log("job", job["id"], "->", state)
    except KeyboardInterrupt:
        log("stopped")
        return 130
    log("handled", handled, "jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
