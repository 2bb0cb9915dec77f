"""A slow HTTP service to put docket in front of (standard library only).

    python3 examples/gateway-upstream/app.py --port 8000

POST /reports builds a "report" in a few seconds; GET /reports/{id} reads one
back; GET /health answers at once; GET /admin answers 403. Nothing here knows
about docket: run it behind `docket serve --upstream http://127.0.0.1:8000`
and call the slow route with `Prefer: respond-async`.
"""

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

REPORTS = {}
LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def reply(self, status, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self.reply(200, {"status": "ok"})
        if self.path == "/admin":
            return self.reply(403, {"detail": "admins only"})
        if self.path.startswith("/reports/"):
            with LOCK:
                report = REPORTS.get(self.path.removeprefix("/reports/"))
            if report is None:
                return self.reply(404, {"detail": "no such report"})
            return self.reply(200, report)
        self.reply(404, {"detail": "not found"})

    def do_POST(self):
        if self.path != "/reports":
            return self.reply(404, {"detail": "not found"})
        length = int(self.headers.get("Content-Length") or 0)
        params = json.loads(self.rfile.read(length) or b"{}")
        seconds = float(params.get("seconds", 3))
        time.sleep(seconds)  # the slow part
        with LOCK:
            report_id = str(len(REPORTS) + 1)
            REPORTS[report_id] = {"id": report_id, "title": params.get("title", "untitled"),
                                  "took_seconds": seconds,
                                  "forwarded_for": self.headers.get("X-Forwarded-For")}
            report = REPORTS[report_id]
        self.reply(201, report)

    def log_message(self, fmt, *args):
        pass


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"listening on http://127.0.0.1:{args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
