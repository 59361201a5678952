"""A tiny service for SLO tests, run as a process pod: serves Prometheus counters of its requests
and errors on /metrics. Each scrape counts as 10 requests; while the flag file exists all of them
are errors, else none, so the test sets the error rate by creating or removing one file.

    python errorapp.py PORT FLAG_FILE
"""

from __future__ import annotations

import http.server
import os
import sys
import threading


class Counts:
    lock = threading.Lock()
    requests = 0
    errors = 0


class Handler(http.server.BaseHTTPRequestHandler):
    flag = ""

    def do_GET(self) -> None:
        with Counts.lock:
            Counts.requests += 10
            Counts.errors += 10 if os.path.exists(self.flag) else 0
            body = (
                "# TYPE app_requests_total counter\n"
                f"app_requests_total {Counts.requests}\n"
                "# TYPE app_errors_total counter\n"
                f"app_errors_total {Counts.errors}\n"
            ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    port, Handler.flag = int(sys.argv[1]), sys.argv[2]
    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
