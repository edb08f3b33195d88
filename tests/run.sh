#!/usr/bin/env bash
# The README's test command: set up what the tests need on this machine, then run them all
# as CI does (`tox -m ci`). Extra arguments go to tox: `tests/run.sh -- -x` hands `-x` to
# pytest.
#
# What it sets up, each only when missing:
#   - Debian's `chromium` (the browser tests drive it through Playwright: no browser
#     download), `redis-server` (the distributed-mode tests start a real one) and
#     `prometheus` (test_metrics.py has a real one scrape a server), with apt;
#   - .venv, with jobtrail and its extras ansible, dev (pytest, tox, playwright…) and
#     distributed (rq, redis) installed into it, editable.
# The tests fail, rather than skip, when any of it is missing (JOBTRAIL_TESTS_ALLOW_SKIP=1
# makes them skip); test_faults.py mounts a tmpfs, so run this as root.
set -euo pipefail
cd "$(dirname "$0")/.."

# tox finds its Pythons (3.10 to 3.13) through pyenv's shims
export PYENV_VERSION="${PYENV_VERSION:-3.11.7:3.10.13:3.12.1:3.13.0}"

missing=()
# tests/test_web.py uses /usr/bin/chromium unless JOBTRAIL_CHROMIUM names another
[[ -n "${JOBTRAIL_CHROMIUM:-}" || -x /usr/bin/chromium ]] || missing+=(chromium)
command -v redis-server >/dev/null || missing+=(redis-server)
# tests/test_deploy.py: systemd-analyze and systemd-sysusers check deploy/'s unit, tini runs
# the container file's entrypoint; tests/test_completion.py loads the zsh script into zsh
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v tini >/dev/null || missing+=(tini)
command -v zsh >/dev/null || missing+=(zsh)
command -v bwrap >/dev/null || missing+=(bubblewrap)  # tests/test_isolation.py: serve --sandbox
command -v prometheus >/dev/null || missing+=(prometheus)  # test_metrics.py scrapes with it
if ((${#missing[@]})); then
    if ! command -v apt-get >/dev/null; then
        echo "tests/run.sh: the tests need ${missing[*]} and there is no apt-get here:" \
            "install them with this system's package manager, then run this again" >&2
        exit 1
    fi
    if [[ $(id -u) != 0 ]]; then
        echo "tests/run.sh: the tests need ${missing[*]}: run this as root to install them," \
            "or install them yourself (apt-get install -y ${missing[*]})" >&2
        exit 1
    fi
    echo "tests/run.sh: installing ${missing[*]} with apt-get" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
# pip reinstalls an editable project on every call (seconds, and a moment in which jobtrail
# cannot be imported); install again only when pyproject.toml changed since the last install
stamp=.venv/.tests-run-installed
wanted="$(sha256sum pyproject.toml | cut -d' ' -f1) ansible,dev,distributed"
if [[ ! -x .venv/bin/tox || "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]]; then
    echo "tests/run.sh: installing jobtrail[ansible,dev,distributed] into .venv" >&2
    .venv/bin/python -m pip install --quiet -e '.[ansible,dev,distributed]'
    echo "$wanted" >"$stamp"
fi

exec .venv/bin/tox -m ci "$@"
