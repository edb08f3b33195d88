"""jobtrail.secrets: the one set of rules the API, the worker and the Ansible job type share."""

from __future__ import annotations

import pytest

from jobtrail.secrets import MASK, Masker, looks_secret, mask_secrets, secret_values
from jobtrail.worker.redact import Redactor


@pytest.mark.parametrize(
    "name", ["password", "db_pass", "API_KEY", "api-key", "access_key", "ssh_key", "auth", "token"]
)
def test_secret_names(name: str) -> None:
    assert looks_secret(name)


@pytest.mark.parametrize("name", ["user", "host", "count", "playbook"])
def test_plain_names(name: str) -> None:
    assert not looks_secret(name)


def test_shown_params_and_masked_values_follow_the_same_names() -> None:
    params = {
        "user": "bob",
        "password": "hunter2-secret",
        "nested": {"api_token": "tok-123456", "region": "eu-west"},
        "credentials": {"user": "svc-account", "keys": ["key-one-1", "key-two-2"]},
        "flag_token": True,  # a boolean would mask every "True" in the log
        "pin_auth": "123",  # too short to tell apart from ordinary text
    }
    shown = mask_secrets(params)
    assert shown["password"] == MASK and shown["credentials"] == MASK
    assert shown["nested"] == {"api_token": MASK, "region": "eu-west"}
    values = secret_values(params)
    assert {"hunter2-secret", "tok-123456", "svc-account", "key-one-1", "key-two-2"} <= values
    assert not values & {"bob", "eu-west", "True", "123"}
    assert MASK in secret_values(shown), "a masked param is known as one (it cannot run again)"


def test_the_worker_and_the_ansible_masker_mask_the_same_values() -> None:
    values = secret_values({"password": 'p"w-1234'})
    assert values == {'p"w-1234', 'p\\"w-1234'}, "also as it appears inside JSON output"
    redact = Redactor(defaults=False)
    redact.set_secrets(values)
    text = 'login p"w-1234 {"pw": "p\\"w-1234"}'
    assert redact(text) == Masker(values)(text) == f'login {MASK} {{"pw": "{MASK}"}}'


def test_text_shapes_use_the_secret_words() -> None:
    redact = Redactor()
    assert redact("api-key=abc123 access_key: xyz789") == f"api-key={MASK} access_key: {MASK}"
    assert redact("auth=s3cr3t") == f"auth={MASK}"
    assert redact("key: value, author Bob") == "key: value, author Bob"
