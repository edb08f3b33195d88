"""An OTLP/HTTP logs receiver for the benchmarks: counts the records it is sent (decoded
with opentelemetry-proto, as a Collector would), in a thread of the benchmark's process."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from _server import free_port
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest


class Counter:
    def __init__(self) -> None:
        self.records = 0
        self.lock = threading.Lock()


@contextmanager
def otlp_receiver() -> Iterator[tuple[str, Counter]]:
    """(its base URL, the count of records it decoded so far)."""
    counter = Counter()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportLogsServiceRequest.FromString(
                self.rfile.read(int(self.headers["Content-Length"]))
            )
            n = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
            with counter.lock:
                counter.records += n
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", counter
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
