"""GET /api/jobs/{id}/logs/search and /logs/download?q=, against a real server in both modes
(the local pool, and Redis + RQ workers), on logs of the ``search_corpus`` fixture job."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterator
from typing import Any

import pytest
import re2

from jobtrail.logstore.patterns import compile_pattern, required_literal
from jobtrail.records import encode_record
from support.bodies import old_search, ordered
from support.live import Live, server_config
from support.modes import MODES, serve_in_mode

pytestmark = pytest.mark.timeout(180)

COUNT = 200  # search_corpus records before its last four; every 10th is an ERROR with a needle
NEEDLES = list(range(10, COUNT + 1, 10))
SEGMENT = 512 * 1024  # small segments, so a bigger corpus rotates


@pytest.fixture(scope="module", params=MODES)
def both(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    config = server_config(tmp_path_factory.mktemp("home"), log_max_bytes=SEGMENT)
    with serve_in_mode(request.param, config, tmp_path_factory) as live:
        yield live


@pytest.fixture(scope="module")
def corpus(both: Live) -> str:
    job = both.submit("search_corpus", count=COUNT)
    assert both.wait(job["job_id"], timeout=60)["status"] == "completed"
    return str(job["job_id"])


def search(live: Live, job_id: str, status: int = 200, **params: Any) -> dict[str, Any]:
    response = live.http.get(f"/api/jobs/{job_id}/logs/search", params=params)
    assert response.status_code == status, response.text
    return dict(response.json())


def seqs(answer: dict[str, Any]) -> list[int]:
    return [m["seq"] for m in answer["matches"]]


def test_a_substring_is_found_in_message_and_traceback(both: Live, corpus: str) -> None:
    found = search(both, corpus, q="Needle found")
    assert seqs(found) == NEEDLES and found["total_matches"] == len(NEEDLES)
    first = found["matches"][0]
    assert first["message"] == 'record 10: Needle found "quoted" café'
    assert first["level"] == "ERROR" and first["host"] == "web2"
    assert found["more"] is False and found["next_after"] is None
    assert found["truncated_before"] is None and found["latest_seq"] == COUNT + 3
    assert (found["q"], found["regex"], found["ignore_case"]) == ("Needle found", False, False)
    # JSON-escaped text (a quote, a non-ASCII letter, a newline) is found as it reads
    assert search(both, corpus, q='"quoted" café')["total_matches"] == len(NEEDLES)
    multi = search(both, corpus, q="line\nsecond")
    assert [m["seq"] for m in multi["matches"]] == [COUNT + 1]
    traceback = search(both, corpus, q="ValueError: the needle is in the traceback")
    assert [m["message"].splitlines()[0] for m in traceback["matches"]] == ["it failed"]
    # the thread, level and time are not searched: they are filters
    assert search(both, corpus, q="MainThread")["total_matches"] == 0
    assert search(both, corpus, q="ERROR")["total_matches"] == 0


def test_ignore_case(both: Live, corpus: str) -> None:
    assert search(both, corpus, q="NEEDLE")["total_matches"] == 1  # only the multi-line one
    folded = search(both, corpus, q="nEEDLE", ignore_case=True, max=1000)
    assert folded["total_matches"] == len(NEEDLES) + 2 and folded["ignore_case"] is True
    assert search(both, corpus, q="CAFÉ", ignore_case=True)["total_matches"] == len(NEEDLES)


def test_regex(both: Live, corpus: str) -> None:
    found = search(both, corpus, q=r"^record \d*5\d: Needle", regex=True)
    assert seqs(found) == [50, 150] and found["regex"] is True
    assert seqs(search(both, corpus, q=r"record (1|2)0:", regex=True)) == [10, 20]
    assert search(both, corpus, q=r"ne+dle", regex=True, ignore_case=True)["total_matches"] == 22
    assert search(both, corpus, q=r"(?i)caf.$", regex=True)["total_matches"] == len(NEEDLES)
    assert search(both, corpus, q=r"\bhay\b", regex=True)["total_matches"] == COUNT - 20


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [("(unclosed", "missing ): (unclosed"), (r"(a)\1", r"invalid escape sequence: \1")],
)
def test_a_bad_regex_is_a_422_quoting_the_error(
    both: Live, corpus: str, pattern: str, reason: str
) -> None:
    detail = search(both, corpus, 422, q=pattern, regex=True)["detail"]
    assert reason in detail and "RE2" in detail and repr(pattern) in detail
    assert search(both, corpus, q=pattern)["total_matches"] == 0  # as text it is fine


def test_a_catastrophic_pattern_answers_promptly(both: Live, corpus: str) -> None:
    # Python's re backtracks through 2**40 ways of splitting the 40 x's before it fails
    started = time.monotonic()
    found = search(both, corpus, q="(x+x+)+y", regex=True)
    assert found["total_matches"] == 0
    assert search(both, corpus, q="^(x+x+)+$", regex=True)["total_matches"] == 1
    assert time.monotonic() - started < 5


def test_context_comes_from_the_unfiltered_log(both: Live, corpus: str) -> None:
    found = search(both, corpus, q="Needle", level="error", context=3)
    match = found["matches"][0]
    assert [r["seq"] for r in match["before"]] == [7, 8, 9]
    assert [r["seq"] for r in match["after"]] == [11, 12, 13]
    assert all(r["level"] == "INFO" for r in match["before"] + match["after"])
    assert {"before", "after"}.isdisjoint(match["before"][0])
    assert [r["seq"] for r in found["matches"][-1]["after"]] == [201, 202, 203]
    edge = search(both, corpus, q="record 1: hay", context=20)["matches"][0]
    assert edge["before"] == [] and [r["seq"] for r in edge["after"]] == list(range(2, 22))
    bare = search(both, corpus, q="Needle", context=0)["matches"][0]
    assert bare["before"] == [] and bare["after"] == []
    assert search(both, corpus, 422, q="Needle", context=21)


def test_total_matches_counts_past_max_and_pages_follow_to_the_end(both: Live, corpus: str) -> None:
    first = search(both, corpus, q="Needle", max=3)
    assert seqs(first) == [10, 20, 30] and first["total_matches"] == 20
    assert first["more"] is True and first["next_after"] == 30
    seen: list[int] = []
    after = 0
    pages = 0
    while True:
        page = search(both, corpus, q="Needle", max=7, after=after)
        pages += 1
        assert page["total_matches"] == len(NEEDLES) - len(seen)
        seen += seqs(page)
        if not page["more"]:
            assert page["next_after"] is None
            break
        after = page["next_after"]
    assert seen == NEEDLES and pages == 3


def test_filters(both: Live, corpus: str) -> None:
    assert seqs(search(both, corpus, q="record 1", host="web1", max=1000)) == [
        1,
        *range(11, 20, 2),
        *range(101, 200, 2),
    ]
    assert search(both, corpus, q="record", level="ERROR")["total_matches"] == len(NEEDLES)
    assert search(both, corpus, q="record", level="WARNING", host="web1")["total_matches"] == 0
    by_field = search(both, corpus, q="Needle", field="attempt:0")
    assert seqs(by_field) == [30, 60, 90, 120, 150, 180]
    assert seqs(search(both, corpus, q="Needle", field=["attempt:0", "attempt:1"])) == []
    assert search(both, corpus, q="Needle", since="2000-01-01T00:00:00Z")["total_matches"] == 20
    assert search(both, corpus, q="Needle", since="2999-01-01T00:00:00Z")["total_matches"] == 0
    assert "field must be KEY:VALUE" in search(both, corpus, 422, q="x", field="attempt")["detail"]
    assert "since" in search(both, corpus, 422, q="x", since="yesterday")["detail"]
    unknown = search(both, corpus, 422, q="x", grep="y")["detail"]
    assert "unknown query parameter 'grep'" in unknown and "q, regex, ignore_case" in unknown


@pytest.mark.parametrize(
    "query",
    [
        {"q": "Needle", "context": 3},
        {"q": "line\nsecond", "context": 20},
        {"q": r"ne+dle", "regex": True, "ignore_case": True, "max": 5, "level": "ERROR"},
    ],
    ids=repr,
)
def test_the_body_is_the_models_answer_from_the_stored_lines(
    both: Live, corpus: str, query: dict[str, Any]
) -> None:
    found = search(both, corpus, **query)
    assert found["matches"] and ordered(found) == ordered(old_search(both, corpus, **query))


def test_unknown_and_missing(both: Live, corpus: str) -> None:
    assert search(both, "nojob-000000000000", 404, q="x")
    assert "q: required" in search(both, corpus, 422)["detail"]


def test_every_rotated_segment_is_searched(both: Live) -> None:
    job = both.submit("search_corpus", count=2000, every=7, pad=1500)
    assert both.wait(job["job_id"], timeout=90)["status"] == "completed"
    kept = both.all_records(job["job_id"])
    found = search(both, job["job_id"], q="Needle", max=1000, context=1)
    expected = [r["seq"] for r in kept if "Needle" in r["message"]]
    assert found["truncated_before"] == kept[0]["seq"] > 1, "the log rotated"
    assert both.server.stats(job["job_id"]).segments == 5
    assert seqs(found) == expected and found["total_matches"] == len(expected) > 100
    first = found["matches"][0]
    assert first["before"] == [] or first["before"][0]["seq"] >= kept[0]["seq"]


def download(live: Live, job_id: str, status: int = 200, **params: Any) -> str:
    response = live.http.get(f"/api/jobs/{job_id}/logs/download", params=params)
    assert response.status_code == status, response.text
    return response.text


def test_download_honours_q_and_every_filter(both: Live, corpus: str) -> None:
    text = download(both, corpus, q="Needle")
    lines = text.splitlines()
    assert len(lines) == len(NEEDLES) and all("Needle found" in line for line in lines)
    assert lines[0].endswith('] ERROR: record 10: Needle found "quoted" café')
    folded = download(both, corpus, q="needle", ignore_case=True, format="jsonl", host="web2")
    records = [json.loads(x) for x in folded.splitlines()]
    assert [r["seq"] for r in records] == NEEDLES  # the last two have no host
    regex = download(both, corpus, q=r"record \d*5\d:", regex=True, format="jsonl", level="error")
    assert [json.loads(x)["seq"] for x in regex.splitlines()] == [50, 150]
    assert download(both, corpus, q="Needle", field="attempt:0").count("\n") == 6
    hosts = download(both, corpus, host="web1", format="jsonl").splitlines()
    assert len(hosts) == COUNT // 2 and all(json.loads(x)["host"] == "web1" for x in hosts)
    assert "missing )" in download(both, corpus, 422, q="(", regex=True)


def test_a_big_download_with_q_pages_through_every_match(both: Live) -> None:
    job = both.submit("search_corpus", count=9000, every=2)
    assert both.wait(job["job_id"], timeout=90)["status"] == "completed"
    lines = download(both, job["job_id"], q="Needle", format="jsonl").splitlines()
    assert [json.loads(x)["seq"] for x in lines] == list(range(2, 9001, 2))


# -- the literal a regex needs: sound for every pattern RE2 takes --------------------------
ATOMS = ["a", "b", "ab", r"\.", r"\d", ".", "[ab]", "[^a]", "(a|b)", "(?:ab)", r"\Qa(\E",
         r"\x61", "{", "}", "]", "(?i)", r"\pL", "^", "$", r"\b", "[[:alpha:]]", "(?P<n>a)",
         r"\z", r"\-", "((a)b)", r"\141", r"[\]a]", "(?i:a)", "(?-i)", "a(?i)b", "é"]  # fmt: skip
QUANTIFIERS = ["", "", "", "?", "*", "+", "{2}", "{0,1}", "{1,3}", "??", "+?"]


def test_the_required_literal_is_in_every_match() -> None:
    """Random RE2 patterns and texts: whatever a pattern matches holds its literal (else the
    byte pre-check would lose matches). Fails with the pattern and text that disagree."""
    rng = random.Random(14)
    checked = 0
    for _ in range(4000):
        pattern = "".join(
            rng.choice(ATOMS) + rng.choice(QUANTIFIERS) for _ in range(rng.randint(1, 5))
        )
        try:
            compiled = re2.compile(pattern)
        except re2.error:
            continue
        literal = required_literal(pattern)
        for _ in range(20):
            text = "".join(rng.choice("abcxÉé.{}]A1 (") for _ in range(rng.randint(0, 12)))
            if literal is None or not compiled.search(text):
                continue
            checked += 1
            needle, fold = literal
            assert (needle.lower() in text.lower()) if fold else (needle in text), (pattern, text)
    assert checked > 1000
    assert required_literal(r"timeout after \d+ ms") == ("timeout after ", False)
    assert required_literal("(?i)connection refused") == ("connection refused", True)
    assert required_literal("refused|reset") is None
    assert required_literal(r"colou?r") == ("colo", False)


def test_the_byte_test_finds_json_escaped_text() -> None:
    """What a line stores (JSON: escaped quotes, backslashes, newlines, tabs) is what the
    raw pattern looks for; the decoded text decides."""
    for text in ['say "hi"', "back\\slash", "two\nlines", "a\ttab", "café ünïcode", "日本語"]:
        line = json.dumps({"seq": 1, "message": f"<{text}>"}, ensure_ascii=False).encode()
        ascii_line = json.dumps({"seq": 1, "message": f"<{text}>"}).encode()
        for q, regex in ((text, False), (re2.escape(text), True)):
            pattern = compile_pattern(q, regex)
            assert pattern.raw.search(line) and pattern.raw.search(ascii_line), (q, regex)
            assert pattern.matches(json.loads(line))


TEXT_ATOMS = [*ATOMS, r"\s", '"', r"\\", "\\n", "[^\\n]", "(?s).", r"\W", "x|y", r"\S+", r"\B"]


def test_the_byte_test_loses_no_match() -> None:
    """Random regexes (with a literal or without, either case) and random messages full of
    what JSON escapes, stored as the worker stores them: every message the regex matches is
    on a line the byte tests keep (``raw`` finds it, ``refuses`` does not refuse it). Fails
    with the pattern and message that disagree."""
    rng = random.Random(15)
    checked = 0
    for _ in range(3000):
        pattern = "".join(
            rng.choice(TEXT_ATOMS) + rng.choice(QUANTIFIERS) for _ in range(rng.randint(1, 4))
        )
        try:
            compiled = compile_pattern(pattern, regex=True, ignore_case=rng.random() < 0.3)
        except ValueError:
            continue
        for _ in range(20):
            message = "".join(rng.choice('abxyé"\\\n\t .A{]1_') for _ in range(rng.randint(0, 10)))
            line = encode_record(1, "2026-11-25T12:00:00.000000Z", "INFO", "app", message, "T")
            stored = line.rstrip("\n").encode()
            if compiled.test(message):
                checked += 1
                found = compiled.raw is None or compiled.raw.search(stored)
                assert found and not compiled.refuses(stored), (pattern, message)
    assert checked > 1000
    assert compile_pattern("^[0-9]+", regex=True).raw is None  # anchored, no literal
    assert compile_pattern("[0-9]+", regex=True).raw is not None
