"""Auth with a bearer token, and secrets kept out of everything the API shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from jobtrail.secrets import MASK
from jobtrail.worker.redact import Redactor
from support.live import Live, live_server
from support.live import server_config as make_config

pytestmark = pytest.mark.timeout(120)
TOKEN = "s3cr3t-token-for-tests"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    config = make_config(tmp_path_factory.mktemp("home"), token=TOKEN)
    with live_server(config) as running:
        running.http.headers["Authorization"] = f"Bearer {TOKEN}"
        yield running


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/sleep-0123456789ab"),
        ("GET", "/api/jobs/sleep-0123456789ab/logs"),
        ("POST", "/api/jobs"),
        ("POST", "/api/jobs/sleep-0123456789ab/cancel"),
        ("GET", "/api/job-types"),
        ("GET", "/openapi.json"),
        ("GET", "/docs"),
    ],
)
def test_every_endpoint_but_health_needs_the_token(guarded: Live, method: str, path: str) -> None:
    with httpx.Client(base_url=guarded.url) as anonymous:
        response = anonymous.request(method, path)
        assert response.status_code == 401
        assert response.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer" in response.json()["detail"]
        wrong = anonymous.request(method, path, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401
        assert anonymous.get("/api/health").status_code == 200


def test_right_token_by_header_or_cookie(guarded: Live) -> None:
    assert guarded.http.get("/api/jobs").status_code == 200
    with httpx.Client(base_url=guarded.url, cookies={"jobtrail_token": TOKEN}) as page:
        assert page.get("/api/jobs").status_code == 200


def test_secrets_are_masked_in_params_logs_and_errors(guarded: Live) -> None:
    job = guarded.submit(
        "leaky", user="bob", password="hunter2-very-secret", api_token="tok-1234567890"
    )
    assert job["params"] == {"user": "bob", "password": MASK, "api_token": MASK}
    done = guarded.wait(job["job_id"])
    assert done["status"] == "completed"
    assert done["params"]["password"] == MASK
    text = "\n".join(guarded.logs(job["job_id"], tail=1000)["logs"])
    assert "hunter2-very-secret" not in text and "tok-1234567890" not in text
    assert "connecting as bob with password ********" in text
    assert "postgres://bob:********@db:5432/app" in text
    assert "password=********" in text
    assert TOKEN not in text, "the server's token never reaches a job"
    listing = guarded.http.get("/api/jobs").json()
    assert "hunter2-very-secret" not in str(listing)


def test_secrets_never_stored_in_clear_on_disk(guarded: Live) -> None:
    job = guarded.submit("leaky", user="eve", password="on-disk-secret-42")
    guarded.wait(job["job_id"])
    home = guarded.server.home
    for path in home.rglob("*"):
        if path.is_file():
            assert b"on-disk-secret-42" not in path.read_bytes(), path


def test_home_and_log_files_are_private(guarded: Live) -> None:
    job = guarded.submit("sleep", seconds=0.01, steps=1)
    guarded.wait(job["job_id"])
    home: Path = guarded.server.home
    assert home.stat().st_mode & 0o777 == 0o700
    assert (home / "jobs.sqlite3").stat().st_mode & 0o077 == 0
    for path in (home / "logs").rglob("*"):
        mode = path.stat().st_mode & 0o777
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_redactor_shapes() -> None:
    redact = Redactor()
    redact.set_secrets(["abcd1234", "xy"])
    assert redact("value abcd1234 here") == f"value {MASK} here"
    assert redact("xy stays: too short to mask safely") == "xy stays: too short to mask safely"
    assert redact("PASSWORD: p@ss") == f"PASSWORD: {MASK}"
    assert redact('{"client_secret": "zzz999"}') == f'{{"client_secret": "{MASK}"}}'
    assert redact("Authorization: Basic dXNlcjpwYXNz") == f"Authorization: Basic {MASK}"
    assert redact("https://u:pw123@host/x") == f"https://u:{MASK}@host/x"
    assert redact("ok=1 changed=0 passed") == "ok=1 changed=0 passed"
    custom = Redactor([r"card (\d{4})-\d{4}", r"SSN-\d+"])
    assert custom("card 1234-5678 SSN-99") == f"card {MASK}-5678 {MASK}"


def test_cli_sends_the_token(guarded: Live) -> None:
    import subprocess
    import sys

    base = [sys.executable, "-m", "jobtrail.cli", "jobs", "--url", guarded.url]
    refused = subprocess.run(base, capture_output=True, text=True, timeout=60, env={"PATH": ""})
    assert refused.returncode == 2 and "401" in refused.stderr
    ok = subprocess.run([*base, "--token", TOKEN], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    by_env = subprocess.run(
        base, capture_output=True, text=True, timeout=60, env={"JOBTRAIL_TOKEN": TOKEN}
    )
    assert by_env.returncode == 0, by_env.stderr


def test_serve_refuses_a_public_address_without_token(tmp_path: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "jobtrail.cli",
            "serve",
            "--host",
            "0.0.0.0",
            "--home",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": ""},
    )
    assert result.returncode == 2
    assert "without a token" in result.stderr and "--insecure" in result.stderr
