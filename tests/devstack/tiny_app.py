"""A stand-in for a team's own app in `strangler run` tests: `python tiny_app.py NAME PORT`.

GET /ready answers 200 once listening; every other GET answers {"side": NAME, "path": ...}.
"""

from __future__ import annotations

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        answer = {"side": sys.argv[1], "path": self.path}
        body = b"ok" if self.path == "/ready" else json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        print(f"{sys.argv[1]} {self.command} {self.path}", flush=True)


if __name__ == "__main__":
    ThreadingHTTPServer(("127.0.0.1", int(sys.argv[2])), Handler).serve_forever()
