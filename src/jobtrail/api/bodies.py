"""The bodies of the hot routes, as bytes: the job with its newest records, a page of its log.

``GET /api/jobs/{id}`` and ``GET /api/jobs/{id}/logs`` are what a busy page or script asks
for most. Their records are stored as JSON lines, so the lines are spliced into the answer
(``msgspec.Raw``) instead of being decoded, validated by pydantic and encoded again; the rest
is encoded by msgspec (several times faster than pydantic's validate-then-serialise, and its
datetimes read as pydantic's: ``2026-11-25T12:00:00.123456Z``). The routes return these
bytes in a ``Response``, so FastAPI validates nothing more; ``JobOut`` and ``LogsOut`` in
``schemas`` still document them (``response_model``), with keys in the same order, and
``tests/test_request_path.py`` proves a body equal to what the models give.
"""

from __future__ import annotations

from typing import Any

import msgspec

from jobtrail.api.schemas import LogFormat, timestamp
from jobtrail.logstore import LogPage, SearchPage, raw
from jobtrail.models import Job

# default=str, as the stream's frames encode (a job's result is whatever it returned)
_encode = msgspec.json.Encoder(enc_hook=str).encode
_decode = msgspec.json.Decoder(dict[str, Any]).decode
HEAD_KEYS = ("seq", "timestamp", "level", "logger", "message")  # LogRecordOut's own


def _array(items: list[bytes]) -> msgspec.Raw:
    return msgspec.Raw(b"[" + b",".join(items) + b"]")


def job_body(job: Job, log_file: str | None, recent: list[bytes] | None = None) -> bytes:
    """``JobOut``'s JSON; ``recent``: the JSON of its newest records' heads, newest first."""
    extra = job.extra
    body: dict[str, Any] = {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "params": job.params,
        "status": job.status.value,
        "progress": float(job.progress),
        "current_step": job.current_step,
        "result": job.result,
        "error": job.error,
        "created_at": timestamp(job.created_at),
        "started_at": timestamp(job.started_at),
        "completed_at": timestamp(job.completed_at),
        "log_file": log_file,
        "logs_expired": job.logs_expired,
        "records_dropped": int(extra.get("dropped", 0)),
        "log_note": extra.get("log_note"),
        "failure": extra.get("failure") or None,
        "recent_logs": _array(recent or []),
        "cancel_requested": job.cancel_requested and not job.status.terminal,
        "duration_s": job.duration_s(),
        "rerun_of": extra.get("rerun_of"),
        "reruns": list(extra.get("reruns", ())),
        "memory_mb": extra.get("memory_mb"),
        "timeout_s": extra.get("timeout_s"),
        "peak_rss_mb": extra.get("peak_rss_mb"),
    }
    return _encode(body)


def logs_body(job_id: str, page: LogPage, entries: list[str] | None, log_file: str | None) -> bytes:
    """``LogsOut``'s JSON: ``entries`` (text lines), or with None the page's stored lines."""
    logs: Any = _array(page.lines) if entries is None else entries
    body: dict[str, Any] = {
        "job_id": job_id,
        "format": (LogFormat.json if entries is None else LogFormat.text).value,
        "total_lines": len(page.records),
        "logs": logs,
        "log_file": log_file,
        "first_seq": page.first_seq,
        "last_seq": page.last_seq,
        "latest_seq": page.latest_seq,
        "truncated_before": page.truncated_before,
        "more": page.more,
    }
    return _encode(body)


def search_body(job_id: str, q: str, regex: bool, ignore_case: bool, page: SearchPage) -> bytes:
    """``SearchOut``'s JSON: each match the stored line with its neighbours' lines spliced in
    where ``SearchMatchOut`` puts them, after the record's head (its declared keys)."""
    body: dict[str, Any] = {
        "job_id": job_id,
        "q": q,
        "regex": regex,
        "ignore_case": ignore_case,
        "total_matches": page.total_matches or 0,
        "matches": _array([_match(m.line, m.before_lines, m.after_lines) for m in page.matches]),
        "more": page.more,
        "next_after": page.next_after,
        "truncated_before": page.truncated_before if page.truncated_before > 1 else None,
        "latest_seq": page.latest_seq,
    }
    return _encode(body)


def _match(line: bytes, before: list[bytes], after: list[bytes]) -> bytes:
    context = b',"before":' + raw.array(before) + b',"after":' + raw.array(after)
    end = raw.head_end(line)
    rest = line[end:] if end is not None else b""
    if end is not None and b'"before":' not in rest and b'"after":' not in rest:
        return line[:end] + context + rest
    # another shape, or keys of the same names (which the context replaces): the model's
    # order, its declared keys first, then the record's others as stored
    record = _decode(line)
    ordered = {k: record[k] for k in HEAD_KEYS if k in record}
    ordered["before"], ordered["after"] = (
        msgspec.Raw(raw.array(before)),
        msgspec.Raw(raw.array(after)),
    )
    ordered.update((k, v) for k, v in record.items() if k not in ordered)
    return _encode(ordered)
