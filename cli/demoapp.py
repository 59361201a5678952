"""The demo's workloads: `serve` answers HTTP with its pod name; `probe` polls servers and prints
one line per round (✓ reachable, ✗ not), which the demo shows live.
"""

from __future__ import annotations

import argparse
import http.server
import sys
import time
import urllib.request


def serve(name: str, port: int) -> None:
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = f"hello from {name}\n".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            pass

    http.server.ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()


def probe_once(url: str, timeout: float) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return bool(r.status == 200)
    except (TimeoutError, OSError):
        return False


def probe(targets: list[str], interval: float, timeout: float) -> None:
    pairs = [t.split("=", 1) for t in targets]
    while True:
        start = time.monotonic()
        marks = [f"{name} {'✓' if probe_once(f'http://{addr}/', timeout) else '✗'}" for name, addr in pairs]
        print(time.strftime("%H:%M:%S") + "  " + "   ".join(marks), flush=True)
        time.sleep(max(0.0, interval - (time.monotonic() - start)))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="chaosbus-demoapp")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve")
    s.add_argument("--name", required=True)
    s.add_argument("--port", type=int, default=8080)
    c = sub.add_parser("probe")
    c.add_argument("targets", nargs="+", help="name=ip:port")
    c.add_argument("--interval", type=float, default=0.5)
    c.add_argument("--timeout", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.cmd == "serve":
        serve(args.name, args.port)
    else:
        probe(args.targets, args.interval, args.timeout)
    sys.exit(0)


if __name__ == "__main__":
    main()
