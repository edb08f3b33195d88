"""An OTLP/HTTP logs receiver for the tests: a real HTTP server on loopback that decodes each
POST /v1/logs as an ``ExportLogsServiceRequest`` with opentelemetry-proto, as a Collector
would, and keeps every record it was sent."""

from __future__ import annotations

import gzip
import http.server
import threading
import time
from typing import Any

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from support.live import free_port


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP logs receiver: every record it was sent, decoded; ``delay`` makes it
    slow, ``stop``/``start`` take it down and bring it back on the same port."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.records: list[dict[str, Any]] = []
        self.resources: list[dict[str, Any]] = []
        self.requests = 0
        self.delay = 0.0
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportLogsServiceRequest.FromString(body)
                if receiver.delay:
                    time.sleep(receiver.delay)
                receiver.take(self.path, request)
                answer = ExportLogsServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(10)

    def take(self, path: str, request: ExportLogsServiceRequest) -> None:
        assert path == "/v1/logs", path
        with self._lock:
            self.requests += 1
            for resource_logs in request.resource_logs:
                resource = {a.key: _value(a.value) for a in resource_logs.resource.attributes}
                self.resources.append(resource)
                for scope in resource_logs.scope_logs:
                    for record in scope.log_records:
                        self.records.append(
                            {
                                "body": _value(record.body),
                                "severity_text": record.severity_text,
                                "severity_number": record.severity_number,
                                "time_unix_nano": record.time_unix_nano,
                                "attributes": {a.key: _value(a.value) for a in record.attributes},
                            }
                        )

    def for_job(self, job_id: str) -> list[dict[str, Any]]:
        with self._lock:
            found = [r for r in self.records if r["attributes"]["jobtrail.job_id"] == job_id]
        return sorted(found, key=lambda r: r["attributes"]["jobtrail.seq"])

    def wait_for(self, job_id: str, count: int, timeout: float = 30.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while len(found := self.for_job(job_id)) < count:
            assert time.monotonic() < deadline, f"{len(found)} of {count} records arrived"
            time.sleep(0.05)
        return found
