"""The REST API against a real uvicorn: shapes, semantics of tail/level/cursors, bad input."""

from __future__ import annotations

import json
import re

import pytest

from support.live import Live

pytestmark = pytest.mark.timeout(120)

TEXT_LINE = re.compile(
    r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ\] (DEBUG|INFO|WARNING|ERROR|CRITICAL): "
)


def test_submit_get_list(live: Live) -> None:
    job = live.submit("sleep", seconds=0.05, steps=1)
    assert job["status"] in ("pending", "running")
    assert re.fullmatch(r"sleep-[0-9a-f]{12}", job["job_id"])
    done = live.wait(job["job_id"])
    assert done["status"] == "completed"
    assert done["result"] == {"slept": 0.05}
    assert done["progress"] == 100
    assert done["started_at"] and done["completed_at"]
    for key in (
        "job_id",
        "job_type",
        "params",
        "status",
        "progress",
        "current_step",
        "result",
        "error",
        "created_at",
        "started_at",
        "completed_at",
        "log_file",
        "recent_logs",
    ):
        assert key in done
    listing = live.http.get("/api/jobs", params={"type": "sleep", "limit": 5}).json()
    assert listing["jobs"][0]["job_id"] == job["job_id"], "newest first"
    assert all(j["job_type"] == "sleep" for j in listing["jobs"])
    completed = live.http.get("/api/jobs", params={"status": "completed"}).json()["jobs"]
    assert all(j["status"] == "completed" for j in completed)


def test_recent_logs_newest_first_and_kept_after_end(live: Live) -> None:
    job = live.submit("levels", count=200)
    done = live.wait(job["job_id"])
    recent = done["recent_logs"]
    assert len(recent) == 50
    seqs = [r["seq"] for r in recent]
    assert seqs == sorted(seqs, reverse=True)
    assert recent[0]["message"] == "info 199"
    assert set(recent[0]) == {"seq", "timestamp", "level", "logger", "message"}


def test_progress_and_current_step(live: Live) -> None:
    job = live.submit("sleep", seconds=1.0, steps=4)
    running = live.wait(job["job_id"], statuses=("running",))
    assert running["status"] == "running"
    seen = set()
    while (current := live.job(job["job_id"]))["status"] == "running":
        if current["current_step"]:
            seen.add(current["current_step"])
    assert seen, "current_step was reported while running"
    assert current["current_step"] == "step 4/4"


def test_level_is_a_minimum_severity_applied_before_tail(live: Live) -> None:
    job = live.submit("levels", errors_every=100, count=1000)
    live.wait(job["job_id"])
    page = live.logs(job["job_id"], level="ERROR", tail=5, format="json")
    levels = [r["level"] for r in page["logs"]]
    assert set(levels) <= {"ERROR", "CRITICAL"}
    assert len(levels) == 5, "tail counts matching records"
    assert [r["message"] for r in page["logs"]][-3:] == ["error 700", "error 800", "error 900"]
    warning = live.logs(job["job_id"], level="WARNING", tail=10000, format="json")["logs"]
    assert {r["level"] for r in warning} == {"WARNING", "ERROR", "CRITICAL"}
    assert len(warning) == 3 + 10


def test_tail_text_format(live: Live) -> None:
    job = live.submit("levels", count=300)
    live.wait(job["job_id"])
    page = live.logs(job["job_id"], tail=100)
    assert page["total_lines"] == 100
    assert all(TEXT_LINE.match(line) for line in page["logs"])
    assert page["logs"][-1].endswith("INFO: info 299"), "oldest first, newest last"
    assert page["log_file"]
    default = live.logs(job["job_id"])
    assert default["total_lines"] == 100


def test_after_cursor_pages_without_gaps(live: Live) -> None:
    job = live.submit("levels", count=2500)
    live.wait(job["job_id"])
    seen: list[int] = []
    after = 0
    while True:
        page = live.logs(job["job_id"], after=after, tail=300, format="json")
        seen += [r["seq"] for r in page["logs"]]
        if not page["more"]:
            break
        after = page["last_seq"]
    assert seen == list(range(1, page["latest_seq"] + 1))


def test_multiline_message_is_one_entry_and_cannot_forge_a_record(live: Live) -> None:
    job = live.submit("messy")
    live.wait(job["job_id"])
    lines = live.logs(job["job_id"])["logs"]
    forged = [line for line in lines if "forged" in line]
    assert len(forged) == 1
    assert (
        forged[0].startswith("[")
        and "INFO: line one\n    [2026-01-01 00:00:00] ERROR: forged" in forged[0]
    )
    records = live.logs(job["job_id"], format="json")["logs"]
    messages = [r["message"] for r in records]
    assert any("unpicklable arg: <unlocked _thread.lock" in m for m in messages)
    assert "extra that cannot pickle" in messages
    assert any("message could not be formatted" in m for m in messages)
    assert any("ZeroDivisionError" in m and "Traceback" in m for m in messages)
    assert live.job(job["job_id"])["status"] == "completed"


def test_output_of_prints_children_and_fds_is_captured(live: Live) -> None:
    job = live.submit("output")
    done = live.wait(job["job_id"])
    assert done["status"] == "completed", done
    records = live.logs(job["job_id"], format="json", tail=1000)["logs"]
    by_message = {r["message"]: r for r in records if len(r["message"]) < 1000}
    assert by_message["printed line"]["level"] == "INFO"
    assert by_message["printed line"]["logger"] == "stdout"
    assert by_message["stderr line"]["level"] == "WARNING"
    assert by_message["stderr line"]["logger"] == "stderr"
    assert "child says hi" in by_message
    assert "from os.system" in by_message and "to-stderr" in by_message
    assert "no newline at the end" in by_message, "a partial last line is flushed at job end"
    assert "bad utf8 \ufffd\ufffd here" in by_message
    assert "carriage return" in by_message, "a CR overwrites the line, as on a terminal"
    assert not any("\x1b" in m or "\r" in m for m in by_message)
    long = [r["message"] for r in records if len(r["message"]) >= 1000]
    assert len(long) == 1 and "…[cut:" in long[0] and len(long[0].encode()) < 64 * 1024 + 100


def test_forked_child_logging_is_captured_with_its_level(live: Live) -> None:
    job = live.submit("forked_logger")
    live.wait(job["job_id"])
    records = live.logs(job["job_id"], format="json")["logs"]
    child = [r for r in records if r["logger"] == "child"]
    assert len(child) == 1 and child[0]["level"] == "WARNING"
    seqs = [r["seq"] for r in records]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


def test_job_types_and_health(live: Live) -> None:
    types = {t["name"]: t for t in live.http.get("/api/job-types").json()}
    assert {"sleep", "demo", "typed"} <= set(types)
    assert "count" in types["typed"]["params_schema"]["properties"]
    health = live.http.get("/api/health").json()
    assert health["status"] == "ok" and health["workers"] == 2


def test_openapi_lists_models(live: Live) -> None:
    spec = live.http.get("/openapi.json").json()
    assert {"JobOut", "LogsOut", "SubmitJob", "LogRecordOut", "ErrorOut"} <= set(
        spec["components"]["schemas"]
    )
    assert "/api/jobs/{job_id}/logs" in spec["paths"]


# -- bad input ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"type": "typed", "params": {"count": "many"}}, "count"),
        ({"type": "typed", "params": {}}, "count: required parameter is missing"),
        ({"type": "typed", "params": {"count": 1, "colour": "red"}}, "colour: unknown parameter"),
        ({"type": "typed", "params": {"count": 1, "flags": "notalist"}}, "flags"),
        ({"type": "nope", "params": {}}, "known types:"),
        ({"params": {}}, "type: required"),
        ([1, 2], "must be a JSON object"),
        ("just a string", "must be a JSON object"),
        ({"type": "sleep", "params": [1]}, "params"),
        ({"type": "sleep", "params": {}, "junk": 1}, "junk"),
    ],
)
def test_bad_submissions_get_422_naming_the_problem(
    live: Live, body: object, fragment: str
) -> None:
    response = live.http.post("/api/jobs", json=body)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_invalid_json_body(live: Live) -> None:
    response = live.http.post(
        "/api/jobs", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    assert "JSON" in response.json()["detail"]


def test_body_over_1mb_is_413(live: Live) -> None:
    big = {"type": "typed", "params": {"count": 1, "name": "x" * (1024 * 1024 + 10)}}
    response = live.http.post("/api/jobs", json=big)
    assert response.status_code == 413
    assert "larger than" in response.json()["detail"]


@pytest.mark.parametrize(
    "job_id",
    [
        "nope",
        "../../etc/passwd",
        "sleep-XYZ",
        "sleep-0123456789ab0",
        "a" * 300,
        "..",
        "sleep-0123456789ab",
    ],
)
def test_unknown_or_malformed_ids_are_404(live: Live, job_id: str) -> None:
    for path in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/logs"):
        response = live.http.get(path)
        assert response.status_code == 404, (path, response.text)
        if "/" not in job_id and job_id != "..":  # the client normalises those paths away
            assert "no job with id" in response.json()["detail"]
    assert live.http.post(f"/api/jobs/{job_id}/cancel").status_code == 404


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"tail": 0}, "tail"),
        ({"tail": 10001}, "tail"),
        ({"tail": "x"}, "tail"),
        ({"level": "VERBOSE"}, "level"),
        ({"format": "xml"}, "format"),
        ({"after": -1}, "after"),
        ({"since": "yesterday"}, "since"),
    ],
)
def test_bad_log_queries_are_422(live: Live, params: dict[str, object], fragment: str) -> None:
    job = live.submit("sleep", seconds=0.01, steps=1)
    response = live.http.get(f"/api/jobs/{job['job_id']}/logs", params=params)
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_bad_list_queries_are_422(live: Live) -> None:
    assert live.http.get("/api/jobs", params={"status": "done"}).status_code == 422
    assert live.http.get("/api/jobs", params={"limit": 0}).status_code == 422


def test_rotation_keeps_newest_segments_and_reads_span_them(tmp_path) -> None:
    from support.live import live_server
    from support.live import server_config as make_config

    config = make_config(tmp_path / "home", log_max_bytes=50_000, log_segments=3)
    with live_server(config) as small:
        job = small.submit("levels", errors_every=50, count=5000)
        assert small.wait(job["job_id"])["status"] == "completed"
        segments = sorted((tmp_path / "home" / "logs" / job["job_id"]).glob("*.jsonl"))
        assert len(segments) == 3
        assert all(s.stat().st_size <= 50_000 for s in segments)
        page = small.logs(job["job_id"], tail=10000, format="json")
        first_kept = page["truncated_before"]
        assert first_kept > 1, "the oldest segments were removed"
        seqs = [r["seq"] for r in page["logs"]]
        assert seqs == list(range(first_kept, page["latest_seq"] + 1)), "one run across segments"
        errors = small.logs(job["job_id"], tail=3, level="ERROR", format="json")["logs"]
        assert [r["message"] for r in errors] == ["error 4850", "error 4900", "error 4950"]


# -- what a request may say (issue 12: items 8-11) ---------------------------------------------
LOGS_TAKES = "tail, level, format, after, since, host, task, event"


def test_unknown_query_parameters_are_422_naming_them_and_the_known_ones(live: Live) -> None:
    job = live.submit("levels", count=3)
    job_id = job["job_id"]
    live.wait(job_id)
    expected = {
        f"/api/jobs/{job_id}/logs?grep=x": "unknown query parameter 'grep'; "
        f"GET /api/jobs/{{job_id}}/logs takes: {LOGS_TAKES}",
        "/api/jobs?logger=stdout&limit=3": "unknown query parameter 'logger'; "
        "GET /api/jobs takes: status, type, limit",
        f"/api/jobs/{job_id}?verbose=1&x=2": "unknown query parameters 'verbose', 'x'; "
        "GET /api/jobs/{job_id} takes no query parameters",
        f"/api/jobs/{job_id}/logs/stream?lvl=ERROR": "unknown query parameter 'lvl'; "
        "GET /api/jobs/{job_id}/logs/stream takes: level, after, tail, host, task, event",
        f"/api/jobs/{job_id}/logs/download?grep=x": "unknown query parameter 'grep'; "
        "GET /api/jobs/{job_id}/logs/download takes: format, level",
        "/api/health?deep=1": "unknown query parameter 'deep'; GET /api/health takes no query",
    }
    for url, detail in expected.items():
        response = live.http.get(url)
        assert response.status_code == 422, (url, response.text)
        assert response.json()["detail"].startswith(detail), (url, response.json())
    # checked before anything else: an ended job's cancel with a typo is still about the typo
    typo = live.http.post(f"/api/jobs/{job_id}/cancel", params={"force": "1"})
    assert typo.status_code == 422 and "'force'" in typo.json()["detail"]
    submit = live.http.post("/api/jobs?wait=1", json={"type": "sleep", "params": {}})
    assert submit.status_code == 422 and "POST /api/jobs takes no query" in submit.text
    # known ones still work, and pages outside the API schema take whatever a browser adds
    assert live.http.get(f"/api/jobs/{job_id}/logs", params={"tail": 1}).status_code == 200
    for page in ("/?job=1", "/docs?x=1", "/openapi.json?x=1"):
        assert live.http.get(page).status_code == 200, page


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"count": True}, "count: Input should be a valid integer (got a boolean)"),
        ({"count": "3"}, "count: Input should be a valid integer (got a string)"),
        ({"count": 3.5}, "count: Input should be a valid integer"),
        ({"count": 1, "name": 7}, "name: Input should be a valid string (got a number)"),
        ({"count": 1, "flags": ["a", 1]}, "flags.1: Input should be a valid string (got a number)"),
    ],
)
def test_params_are_validated_strictly(
    live: Live, params: dict[str, object], fragment: str
) -> None:
    response = live.http.post("/api/jobs", json={"type": "typed", "params": params})
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]


def test_strict_params_still_take_an_int_for_a_float(live: Live) -> None:
    job = live.submit("typed", count=2, ratio=1, flags=["a"])
    assert job["params"] == {"count": 2, "name": "x", "ratio": 1.0, "flags": ["a"]}
    assert live.wait(job["job_id"])["result"]["ratio"] == 1.0


def test_the_body_is_validated_strictly_too(live: Live) -> None:
    response = live.http.post("/api/jobs", json={"type": 5, "params": {}})
    assert response.status_code == 422 and "type: Input should be a valid string" in response.text


def test_both_format_spellings_and_any_case_of_a_level(live: Live) -> None:
    job = live.submit("levels", errors_every=100, count=300)
    job_id = job["job_id"]
    live.wait(job_id)
    base = live.logs(job_id, level="WARNING", format="json")
    for level in ("warning", "Warning", "WARNING"):
        for fmt in ("json", "jsonl"):
            page = live.logs(job_id, level=level, format=fmt)
            assert page["logs"] == base["logs"] and page["format"] == "json", (level, fmt)
    assert live.logs(job_id, level="error")["logs"] == live.logs(job_id, level="ERROR")["logs"]
    download = f"/api/jobs/{job_id}/logs/download"
    jsonl = live.http.get(download, params={"format": "jsonl"})
    as_json = live.http.get(download, params={"format": "json"})
    assert as_json.status_code == 200 and as_json.text == jsonl.text
    assert as_json.headers["content-type"] == "application/x-ndjson"
    errors = live.http.get(download, params={"format": "json", "level": "error"}).text
    records = [json.loads(line) for line in errors.splitlines()]
    assert {r["level"] for r in records} == {"ERROR", "CRITICAL"} and len(records) == 5
    text = live.http.get(download, params={"level": "Warning"}).text.splitlines()
    assert len(text) == 6 and all(TEXT_LINE.match(line) for line in text)
    bad = live.http.get(f"/api/jobs/{job_id}/logs", params={"level": "loud"})
    assert bad.status_code == 422 and "level" in bad.json()["detail"]


@pytest.mark.parametrize(
    "content_type",
    ["application/x-www-form-urlencoded", "text/plain", "multipart/form-data; boundary=x", ""],
)
def test_a_body_that_is_not_sent_as_json_is_415_saying_so(live: Live, content_type: str) -> None:
    body = b'{"type": "sleep", "params": {"seconds": 0.01}}'
    headers = {"content-type": content_type} if content_type else {}
    response = live.http.post("/api/jobs", content=body, headers=headers)
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert detail.startswith("body: send it with the header 'Content-Type: application/json'")
    assert ("without one" if not content_type else repr(content_type)) in detail
    assert "must be a JSON object" not in detail


def test_json_content_types_are_read_as_json(live: Live) -> None:
    body = b'{"type": "sleep", "params": {"seconds": 0.01}}'
    for headers in (
        {"content-type": "application/json; charset=utf-8"},
        {"content-type": "application/vnd.api+json"},
    ):
        response = live.http.post("/api/jobs", content=body, headers=headers)
        assert response.status_code == 202, (headers, response.text)


def test_playbooks_without_a_directory_are_the_bundled_demo(live: Live) -> None:
    from jobtrail.jobtypes.ansible.job import DEMO_DIR

    found = live.http.get("/api/playbooks").json()
    assert found == {"playbooks": ["demo.yml"], "directory": str(DEMO_DIR)}
