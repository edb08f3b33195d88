"""The REST API against a real uvicorn: shapes, semantics of tail/level/cursors, bad input."""

from __future__ import annotations

import re

import pytest

from conftest import Live

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
    from conftest import live_server
    from conftest import test_config as make_config

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
