"""Structured fields: what job code passes with ``extra=`` is kept under a record's ``fields``
(bounded, secrets masked), structlog's key/values too, and ``field=KEY:VALUE`` filters the
log, its stream and its download, in both modes.

The rendering is checked in process on a real handler and batcher (every bound and marker);
the rest runs real jobs on a real server, local and Redis + RQ workers."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from test_stream import all_events, records

from jobtrail.logstore import FieldMatch
from jobtrail.messages import Batch, JobMessage
from jobtrail.records import (
    FIELDS_CUT_KEY,
    MAX_FIELD_BYTES,
    MAX_FIELDS,
    MAX_FIELDS_BYTES,
    decode_record,
    render_fields,
)
from jobtrail.secrets import MASK
from jobtrail.worker.batcher import RecordBatcher
from jobtrail.worker.handler import BatchQueueHandler
from jobtrail.worker.redact import Redactor
from support.live import Live
from support.live import server_config as make_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(180)


# -- rendering, in process --------------------------------------------------------------------
class Captured:
    """A logger whose records go through jobtrail's handler and batcher, as in a worker."""

    def __init__(self) -> None:
        self.sent: list[JobMessage] = []
        self.batcher = RecordBatcher(self.sent.append, redact=Redactor())
        self.batcher.begin_job("fields-000000000000")
        self.handler = BatchQueueHandler(self.batcher)
        self.logger = logging.getLogger("test_fields.captured")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)

    def records(self) -> list[dict[str, Any]]:
        """Every record logged so far, parsed from the lines the batcher sent."""
        self.batcher.flush()
        out = []
        for message in self.sent:
            assert isinstance(message, Batch)
            for line in message.payload.splitlines():
                record = decode_record(line)
                assert record is not None, line
                out.append(record)
        return out

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.batcher.close()


@pytest.fixture
def captured() -> Iterator[Captured]:
    cap = Captured()
    try:
        yield cap
    finally:
        cap.close()


def test_extras_become_fields_scalars_as_they_are_objects_as_repr(captured: Captured) -> None:
    logger = captured.logger
    logger.info("plain")
    logger.info(
        "with %s",
        "args",
        extra={"attempt": 3, "ratio": 0.5, "ok": True, "none": None, "user": "ann",
               "obj": {"a": [1, 2]}, "nan": float("nan"), "huge": 10**30},
    )  # fmt: skip
    plain, rich = captured.records()
    assert "fields" not in plain, "a record without extras has no fields key"
    assert rich["message"] == "with args"
    assert rich["fields"] == {
        "attempt": 3,
        "ratio": 0.5,
        "ok": True,
        "none": None,
        "user": "ann",
        "obj": "{'a': [1, 2]}",
        "nan": "nan",
        "huge": "<int of 100 bits>",
    }


def test_standard_and_jobtrail_attributes_are_not_fields(captured: Captured) -> None:
    """Nothing logging itself sets is a field, also when a formatter or filter added
    ``message``/``asctime`` (a record has more attributes then, but no extras)."""
    logger = captured.logger
    logging.Formatter("%(asctime)s %(message)s").format(
        record := logger.makeRecord(logger.name, logging.INFO, "f.py", 1, "formatted", (), None)
    )
    logger.handle(record)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        logger.exception("failed", stack_info=True, stacklevel=1)
    logger.info("ansible-ish", extra={"jobtrail_fields": {"host": "web1"}, "attempt": 1})
    formatted, failed, ansible = captured.records()
    assert "fields" not in formatted and "fields" not in failed
    assert "RuntimeError: boom" in failed["message"]
    assert ansible["host"] == "web1", "jobtrail's own keys stay top-level"
    assert ansible["fields"] == {"attempt": 1}


def test_values_are_cut_and_the_count_and_size_bounded(captured: Captured) -> None:
    logger = captured.logger
    logger.info("long", extra={"blob": "é" * 5000})
    logger.info("many", extra={f"k{n:02d}": n for n in range(40)})
    logger.info("big", extra={f"b{n}": "z" * 1000 for n in range(20)})
    long, many, big = captured.records()
    blob = long["fields"]["blob"]
    assert blob.endswith(" more bytes]") and "…[cut: " in blob
    assert len(blob.split(" …[cut:")[0].encode()) <= MAX_FIELD_BYTES
    assert len(many["fields"]) == MAX_FIELDS + 1
    assert list(many["fields"])[:MAX_FIELDS] == [f"k{n:02d}" for n in range(MAX_FIELDS)]
    assert many["fields"][FIELDS_CUT_KEY] == f"{40 - MAX_FIELDS} more fields cut"
    kept = len(big["fields"]) - 1
    assert kept < 20 and big["fields"][FIELDS_CUT_KEY] == f"{20 - kept} more fields cut"
    assert len(json.dumps(big["fields"])) <= MAX_FIELDS_BYTES + 200


def test_secrets_in_fields_are_masked(captured: Captured) -> None:
    logger = captured.logger
    captured.batcher.redact.set_secrets(["hunter2-long"])
    logger.info(
        "login",
        extra={"password": "pw-by-name", "db_pass": 1234, "url": "https://bob:pa55w0rd@db/x",
               "note": "the value hunter2-long leaked", "auth_enabled": None},
    )  # fmt: skip
    (record,) = captured.records()
    fields = record["fields"]
    assert fields["password"] == MASK and fields["db_pass"] == MASK, "secret-looking keys"
    assert "pa55w0rd" not in fields["url"] and MASK in fields["url"], "shapes"
    assert fields["note"] == f"the value {MASK} leaked", "the job's secret param values"
    assert fields["auth_enabled"] is None


def test_render_fields_bounds_keys_and_survives_a_broken_repr() -> None:
    class Broken:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    class NoEquality:
        def __eq__(self, other: object) -> bool:
            raise TypeError("ambiguous")

        __hash__ = object.__hash__

    fields = render_fields([("k" * 500, 1), (7, Broken()), ("secret", NoEquality())])
    long_key, _, _ = fields
    assert long_key.startswith("k" * 100) and "…[cut: " in long_key
    assert fields["7"].startswith("<Broken object: repr failed: RuntimeError")
    assert fields["secret"] == MASK


def test_field_match_parses_once_and_checks_bytes_then_values() -> None:
    assert FieldMatch.parse(None) is None and FieldMatch.parse([]) is None
    match = FieldMatch.parse(["attempt:3", "url:http://x:1"])
    assert match is not None and match.pairs == (("attempt", "3"), ("url", "http://x:1"))
    with pytest.raises(ValueError, match="field must be KEY:VALUE"):
        FieldMatch.parse(["attempt"])
    with pytest.raises(ValueError, match="got ':3'"):
        FieldMatch.parse([":3"])
    one = FieldMatch.parse(["attempt:3"])
    assert one is not None
    for stored in (3, "3"):
        line = json.dumps({"seq": 1, "fields": {"attempt": stored}}, separators=(",", ":"))
        assert one.may_match(line.encode()) and one.accepts(json.loads(line))
    assert not one.may_match(b'{"seq":1,"message":"attempt 3"}'), "no JSON parsed for it"
    assert not one.accepts({"seq": 1, "attempt": 3}), "only fields, not top-level keys"
    assert not one.accepts({"seq": 1, "fields": {"attempt": 30}})
    flag = FieldMatch.parse(["ok:true"])
    assert flag is not None and flag.accepts({"fields": {"ok": True}})


# -- real jobs on a real server, both modes ---------------------------------------------------
@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    home = tmp_path_factory.mktemp("home")
    with serve_in_mode(request.param, make_config(home), tmp_path_factory) as live:
        yield live


@pytest.fixture(scope="module")
def fielded(both: Live) -> tuple[Live, str]:
    job = both.submit("fielded", count=9, token="tok-value-xyz")
    assert both.wait(job["job_id"])["status"] == "completed"
    return both, job["job_id"]


def get(live: Live, job_id: str, route: str, **params: Any) -> httpx.Response:
    return live.http.get(f"/api/jobs/{job_id}/{route}", params=params)


def test_fields_show_in_the_json_log_bounded_and_masked(fielded: tuple[Live, str]) -> None:
    live, job_id = fielded
    by_message = {r["message"]: r for r in live.all_records(job_id)}
    assert by_message["try 4"]["fields"] == {"attempt": 2, "user": "u0", "ok": True}
    assert "fields" not in by_message["plain, no fields"]
    assert by_message["an object"]["fields"] == {
        "thing": "<Opaque holding a lock>",
        "ratio": 0.5,
        "nothing": None,
    }
    assert "…[cut: " in by_message["a long value"]["fields"]["blob"]
    many = by_message["many"]["fields"]
    assert len(many) == MAX_FIELDS + 1 and many[FIELDS_CUT_KEY] == "8 more fields cut"
    secret = by_message["secret"]["fields"]
    assert secret == {"api_token": MASK, "note": f"sent {MASK} along"}
    child = by_message["from a forked child"]
    assert child["fields"] == {"attempt": 7, "thing": "<Opaque holding a lock>"}
    assert child["level"] == "WARNING" and child["logger"] == "fixture"


def test_field_filter_on_logs_with_level_and_tail(fielded: tuple[Live, str]) -> None:
    live, job_id = fielded
    page = get(live, job_id, "logs", field="attempt:3", format="json").json()
    assert [r["message"] for r in page["logs"]] == ["try 2", "try 5", "try 8", "a long value"]
    both_hold = get(live, job_id, "logs", field=["attempt:3", "user:u1"], format="json").json()
    assert [r["message"] for r in both_hold["logs"]] == ["try 5"]
    errors = get(live, job_id, "logs", field="user:u0", level="ERROR", format="json").json()
    assert [r["message"] for r in errors["logs"]] == ["try 2", "try 8"]
    tail = get(live, job_id, "logs", field="ok:true", tail=2, format="json").json()
    assert [r["message"] for r in tail["logs"]] == ["try 7", "try 8"]
    after = get(live, job_id, "logs", field="ok:true", after=5, tail=2, format="json").json()
    assert [r["message"] for r in after["logs"]] == ["try 5", "try 6"] and after["more"]
    text = get(live, job_id, "logs", field="attempt:1").json()["logs"]
    assert len(text) == 3 and all(line.endswith(("try 0", "try 3", "try 6")) for line in text)
    none = get(live, job_id, "logs", field="attempt:4").json()
    assert none["logs"] == [] and none["latest_seq"] > 0


def test_field_filter_on_the_stream(fielded: tuple[Live, str]) -> None:
    live, job_id = fielded
    events = all_events(live, job_id, {"field": ["attempt:3"], "level": "ERROR"})
    assert [r["message"] for r in records(events)] == ["try 2", "try 5", "try 8"]
    assert all(r["fields"]["attempt"] == 3 for r in records(events))
    tail = records(all_events(live, job_id, {"field": "user:u1", "tail": 2}))
    assert [r["message"] for r in tail] == ["try 5", "try 7"]


def test_field_filter_on_a_live_stream(both: Live) -> None:
    """Followed from before it starts, so records come from the hub's window as they are
    written (a filtered follower has each block's records parsed once)."""
    job = both.submit("fielded", count=3000)
    events = all_events(both, job["job_id"], {"field": ["attempt:3", "user:u1"]})
    got = [r["message"] for r in records(events)]
    assert got == [f"try {i}" for i in range(3000) if i % 3 == 2 and i % 2 == 1]


def test_field_filter_on_the_download(fielded: tuple[Live, str]) -> None:
    live, job_id = fielded
    jsonl = get(live, job_id, "logs/download", format="jsonl", field="attempt:3")
    assert jsonl.status_code == 200
    lines = [json.loads(line) for line in jsonl.text.splitlines()]
    assert [r["message"] for r in lines] == ["try 2", "try 5", "try 8", "a long value"]
    assert lines[0]["fields"] == {"attempt": 3, "user": "u0", "ok": True}
    text = get(live, job_id, "logs/download", field=["attempt:3", "user:u1"], level="ERROR")
    assert text.status_code == 200 and text.text.splitlines()[0].endswith("ERROR: try 5")
    assert len(text.text.splitlines()) == 1
    whole = get(live, job_id, "logs/download", format="jsonl").text.splitlines()
    assert any('"fields":{"thing":"<Opaque holding a lock>"' in line for line in whole)


@pytest.mark.parametrize("route", ["logs", "logs/stream", "logs/download"])
def test_a_field_without_a_colon_is_a_422_saying_the_form(
    fielded: tuple[Live, str], route: str
) -> None:
    live, job_id = fielded
    response = get(live, job_id, route, field="attempt")
    assert response.status_code == 422
    assert "field must be KEY:VALUE, such as field=attempt:3" in response.text
    assert "'attempt'" in response.text


def test_structlog_key_values_become_fields(both: Live) -> None:
    job = both.submit("structlogged")
    done = both.wait(job["job_id"])
    assert done["status"] == "completed", done
    logs = {r["logger"]: r for r in both.all_records(job["job_id"]) if r["logger"] != "stderr"}
    placed = [r for r in both.all_records(job["job_id"]) if r["message"] == "order placed"]
    assert placed[0]["fields"] == {"request_id": "r-1", "order": 42, "total": 9.5}
    shipped, failed = (
        r for r in both.all_records(job["job_id"]) if r["logger"] == "slog.formatter"
    )
    assert shipped["message"] == "order shipped" and shipped["level"] == "WARNING"
    assert shipped["fields"] == {"request_id": "r-2", "order": 43}
    assert failed["message"].startswith("shipping failed\nTraceback (most recent call last)")
    assert "ValueError: no such carrier" in failed["message"]
    assert failed["fields"] == {"request_id": "r-2", "order": 44}
    assert "slog.kwargs" in logs
    # the job's own ProcessorFormatter still got the event dict as it was
    own = done["result"]
    assert "event='order shipped'" in own and "order=43" in own and "request_id='r-2'" in own
    filtered = both.logs(job["job_id"], field="order:43", format="json")["logs"]
    assert [r["message"] for r in filtered] == ["order shipped"]
