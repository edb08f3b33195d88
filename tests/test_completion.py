"""``jobtrail completion bash|zsh``: the scripts, loaded into real shells and asked to
complete (bash through its completion function and ``compgen``, zsh through ``zpty``, an
interactive shell given a TAB)."""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from jobtrail.cli.parser import build_parser
from support.requirements import missing

pytestmark = pytest.mark.timeout(60)

CLI = [sys.executable, "-m", "jobtrail.cli"]
VERBS = ["serve", "submit", "jobs", "show", "logs", "cancel", "worker", "completion"]


def script(shell: str) -> str:
    done = subprocess.run(
        [*CLI, "completion", shell], capture_output=True, text=True, timeout=30, check=True
    )
    return done.stdout


def bash_complete(path: Path, line: str) -> list[str]:
    """What bash offers for ``line`` (ends with a space to complete the next word)."""
    # as readline splits the line: at blanks, and at '=' (in COMP_WORDBREAKS) into its own word
    words = [part for word in line.split() for part in re.split(r"(=)", word) if part]
    words += [""] if line.endswith(" ") else []
    program = textwrap.dedent(
        f"""\
        source {path}
        COMP_WORDS=({" ".join(f"'{w}'" for w in words)})
        COMP_CWORD={len(words) - 1}
        COMP_LINE='{line}'
        COMP_POINT=${{#COMP_LINE}}
        _jobtrail jobtrail "${{COMP_WORDS[COMP_CWORD]}}" "${{COMP_WORDS[COMP_CWORD-1]}}"
        printf '%s\\n' "${{COMPREPLY[@]}}"
        """
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return [w for w in done.stdout.splitlines() if w]


@pytest.fixture(scope="module")
def bash_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bash") / "jobtrail.bash"
    path.write_text(script("bash"))
    return path


def test_bash_registers_the_completion(bash_script: Path) -> None:
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", f"source {bash_script} && complete -p jobtrail"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and done.stderr == "", done
    assert done.stdout.strip() == "complete -F _jobtrail jobtrail"


def test_bash_completes_verbs_options_and_choices(bash_script: Path, tmp_path: Path) -> None:
    assert set(VERBS) <= set(bash_complete(bash_script, "jobtrail "))
    assert bash_complete(bash_script, "jobtrail su") == ["submit", "summary"]
    assert bash_complete(bash_script, "jobtrail serve --log-f") == ["--log-format"]
    assert bash_complete(bash_script, "jobtrail serve --log-format ") == ["text", "json"]
    assert bash_complete(bash_script, "jobtrail jobs --status f") == ["failed"]
    assert bash_complete(bash_script, "jobtrail jobs --status=f") == ["failed"]  # split at =
    assert bash_complete(bash_script, "jobtrail completion ") == ["bash", "zsh"]
    assert "--follow" in bash_complete(bash_script, "jobtrail logs abc --f")
    # an option before the verb does not hide it; a value to type offers nothing
    assert bash_complete(bash_script, "jobtrail submit --url ") == []
    (tmp_path / "homes").mkdir()
    (tmp_path / "a-file").write_text("")
    folders = bash_complete(bash_script, f"jobtrail serve --home {tmp_path}/")
    assert folders == [f"{tmp_path}/homes"]  # folders only


def test_every_verb_and_option_of_the_parser_is_offered(bash_script: Path) -> None:
    parser = build_parser()
    (verbs,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(bash_complete(bash_script, "jobtrail ")) >= set(verbs.choices)
    for name, sub in verbs.choices.items():
        flags = {f for a in sub._actions for f in a.option_strings if f.startswith("--")}
        assert set(bash_complete(bash_script, f"jobtrail {name} --")) == flags, name


ZSH_DRIVER = r"""
# zsh -f DRIVER SCRIPT OUT LINE: an interactive zsh (zpty) loads SCRIPT after compinit,
# records every match its completion adds into OUT, and is sent LINE and a TAB
zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "autoload -Uz compinit; compinit -u -D; source ${(q)1}"
zpty -w z "compadd() { if [[ \${@[1,(i)(-|--)]} == *-(O|A|D)\\ * ]]; then \
    builtin compadd \"\$@\"; return; fi; local -a hits; builtin compadd -A hits \"\$@\"; \
    (( \$#hits )) || return 1; print -rl -- \$hits >> ${(q)2}; builtin compadd \"\$@\"; }"
zpty -w z "print -r -- \$_comps[jobtrail] > ${(q)2}.registered"
zpty -w -n z "$3"$'\t'
for i in {1..100}; do [[ -s $2 ]] && break; sleep 0.1; done
sleep 0.3
zpty -d z
"""


def zsh_complete(tmp_path: Path, path: Path, line: str) -> tuple[list[str], str]:
    """The matches zsh's completion adds for ``line``, and the function registered for
    ``jobtrail``."""
    driver = tmp_path / "driver.zsh"
    driver.write_text(ZSH_DRIVER)
    out = tmp_path / f"out-{abs(hash(line))}"
    subprocess.run(
        ["zsh", "-f", str(driver), str(path), str(out), line],
        capture_output=True,
        timeout=30,
        check=True,
    )
    registered = Path(f"{out}.registered").read_text().strip()
    return (out.read_text().split() if out.exists() else []), registered


@pytest.fixture(scope="module")
def zsh_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("zsh") is None:
        missing("zsh is not installed", "apt-get install zsh")
    path = tmp_path_factory.mktemp("zsh") / "_jobtrail"
    path.write_text(script("zsh"))
    return path


def test_zsh_script_parses(zsh_script: Path) -> None:
    done = subprocess.run(["zsh", "-n", str(zsh_script)], capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("jobtrail su", {"submit", "summary"}),
        ("jobtrail serve --start-method ", {"fork", "spawn", "forkserver"}),
        ("jobtrail serve --log-format ", {"text", "json"}),
        ("jobtrail jobs --st", {"--status"}),
        ("jobtrail completion ", {"bash", "zsh"}),
    ],
)
def test_zsh_completes(zsh_script: Path, tmp_path: Path, line: str, expected: set[str]) -> None:
    matches, registered = zsh_complete(tmp_path, zsh_script, line)
    assert registered == "_jobtrail"
    assert set(matches) == expected, matches


def test_zsh_offers_every_verb(zsh_script: Path, tmp_path: Path) -> None:
    matches, _ = zsh_complete(tmp_path, zsh_script, "jobtrail ")
    assert set(VERBS) <= set(matches)
