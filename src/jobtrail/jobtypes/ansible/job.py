"""The ``ansible_playbook`` job type: a playbook run through ansible-runner in a worker.

The job log holds what ``ansible-playbook`` prints to a terminal, line for line and in order
(logger ``ansible``, one record per runner event, structured fields ``play``, ``task``,
``host``, ``event`` and ``rc``; see ``events`` for levels). A failed run fails the
job with a one-line digest (``Task "X" failed on host: why (rc=N)``) and a structured
``failure``.

Choices worth knowing:

* Playbooks (and inventory files) are paths relative to the server's ``--playbooks`` dir,
  or to the bundled ``jobtrail/demo`` dir when none is configured; the server refuses
  anything outside with 422 before the job is queued. ``playbook`` is required (a default
  would name a file that a user's own directory does not have); a missing or unknown one
  is answered with the playbooks that exist (``list_playbooks``, ``GET /api/playbooks``).
* ``inventory`` as a host list (``localhost,`` or ``web1,web2,``) becomes an INI inventory
  file: ansible-runner would take the string as inventory *content*. ``localhost`` gets
  ``ansible_connection=local`` and this Python as its interpreter; and, when this user's
  home (from passwd: Ansible ignores ``$HOME`` there) is missing or not writable, as a
  ``--job-user`` without one, ``ansible_remote_tmp`` in the private data dir, not
  Ansible's ``~USER/.ansible/tmp``.
* ansible-runner's private data dir is a fresh ``tempfile.mkdtemp()`` directory (mode 0700)
  removed after the run; the extra vars go to ``env/extravars`` in it (mode 0600), never on
  the command line. The event handler returns False, so ansible-runner writes no
  ``job_events`` files; what it does write (its ``artifacts/``) goes with the directory.
* Values of secret-looking extra vars (``secrets.looks_secret``) are masked in every
  record, the digest and the failure, wherever they appear.
* ``ansible-playbook`` is a child of the worker; on cancel the pool signals the whole tree
  and this module kills whatever the run started that is still alive.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

import psutil
from pydantic import Field

from jobtrail.errors import InvalidParams, JobFailed
from jobtrail.jobtypes.ansible.events import Entry, EventTranslator, estimate_plan
from jobtrail.registry import job
from jobtrail.secrets import Masker, secret_values
from jobtrail.worker.runtime import PLAYBOOKS_ENV, progress

JOB_TYPE = "ansible_playbook"
DEMO_DIR = Path(__file__).resolve().parent / "demo"
LOCAL_HOSTS = frozenset({"localhost"})
INSTALL_HINT = "install it with: pip install 'jobtrail[ansible]'"
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:\-]*$")
_PROGRESS_EVENTS = (
    "playbook_on_play_start",
    "playbook_on_task_start",
    "playbook_on_handler_task_start",
)

output = logging.getLogger("ansible")  # the playbook's own output
log = logging.getLogger("jobtrail.jobtypes.ansible.job")


# -- where playbooks come from -----------------------------------------------------------------
def playbooks_dir() -> Path:
    """The server's --playbooks dir, or the bundled demo playbooks when none is configured."""
    configured = os.environ.get(PLAYBOOKS_ENV)
    return Path(configured).expanduser().resolve() if configured else DEMO_DIR


LISTED_PLAYBOOKS = 20  # a 422 names this many, then says how many more there are
_NOT_PLAYBOOK_DIRS = frozenset(
    {"roles", "group_vars", "host_vars", "vars", "tasks", "handlers", "templates", "files",
     "defaults", "meta", "collections", "library", "filter_plugins", "module_utils"}
)  # fmt: skip
_SCAN_FILES = 10_000  # a huge directory is listed in part rather than walked for seconds


def list_playbooks(base: Path | None = None) -> list[str]:
    """The playbooks in ``base`` (default: ``playbooks_dir()``), relative paths, sorted.

    A playbook is a YAML file whose top level is a list (of plays); inventories and vars
    files are mappings, and the folders of roles and vars are not looked into."""
    root = (base or playbooks_dir()).resolve()
    found: list[str] = []
    scanned = 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in _NOT_PLAYBOOK_DIRS)
        for name in files:
            scanned += 1
            path = Path(folder) / name
            if path.suffix in (".yml", ".yaml") and _is_playbook(path):
                found.append(path.relative_to(root).as_posix())
        if scanned >= _SCAN_FILES:
            break
    return sorted(found)


def _is_playbook(path: Path) -> bool:
    """Its first line of content starts a YAML list (read from the first 4 KiB only)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4096).decode("utf-8", "replace")
    except OSError:
        return False
    for line in head.splitlines():
        text = line.strip()
        if text and not text.startswith("#") and text != "---":
            return text.startswith("-")
    return False


def playbooks_hint() -> str:
    """The playbooks that exist, for a 422 about a missing or unknown one."""
    base = playbooks_dir()
    books = list_playbooks(base)
    if not books:
        return f"there are no playbooks in {base}"
    shown = ", ".join(books[:LISTED_PLAYBOOKS])
    more = len(books) - LISTED_PLAYBOOKS
    return f"playbooks in {base}: {shown}" + (f" and {more} more" if more > 0 else "")


def resolve_inside(base: Path, name: str, what: str, *, allow_dir: bool = False) -> Path:
    """``name`` resolved inside ``base`` (symlinks followed), or ValueError saying why not."""
    if not name or os.path.isabs(name) or name.startswith("~"):
        raise ValueError(
            f"{what}: must be a path relative to the playbooks directory, got {name!r}"
        )
    path = (base / name).resolve()
    if not path.is_relative_to(base.resolve()):
        raise ValueError(f"{what}: {name!r} resolves outside the playbooks directory")
    if not (path.is_file() or (allow_dir and path.is_dir())):
        raise ValueError(f"{what}: no file {name!r} in the playbooks directory")
    return path


def host_list(inventory: str) -> list[str] | None:
    """The hosts of a ``host1,host2,`` inventory; None when it names an inventory file."""
    if "," not in inventory:
        return None
    hosts = [h.strip() for h in inventory.split(",") if h.strip()]
    if not hosts:
        raise ValueError("inventory: the host list is empty")
    bad = [h for h in hosts if not _HOST.match(h)]
    if bad:
        raise ValueError(f"inventory: not a host name: {', '.join(repr(h) for h in bad)}")
    return hosts


def _check(values: dict[str, Any]) -> dict[str, Any]:
    """Server-side, before queuing: the playbook and inventory must be inside the dir."""
    base = playbooks_dir()
    problems = []
    try:
        resolve_inside(base, values["playbook"], "playbook")
    except ValueError as exc:
        problems += [str(exc), playbooks_hint()]
    try:
        if host_list(values["inventory"]) is None:
            resolve_inside(base, values["inventory"], "inventory", allow_dir=True)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        raise InvalidParams(JOB_TYPE, problems)
    return values


# -- the job -----------------------------------------------------------------------------------
@job(JOB_TYPE, check=_check, hints={"playbook": playbooks_hint})
def ansible_playbook(
    playbook: str,
    inventory: str = "localhost,",
    extra_vars: dict[str, Any] | None = None,
    limit: str | None = None,
    tags: str | list[str] | None = None,
    skip_tags: str | list[str] | None = None,
    check: bool = False,
    verbosity: Annotated[int, Field(ge=0, le=4)] = 0,
) -> dict[str, Any]:
    """Run an Ansible playbook from the playbooks directory; the log shows what a terminal would.

    ``playbook`` and an inventory file are relative to the server's --playbooks directory;
    ``inventory`` may also be a host list such as ``localhost,``. ``check`` is a dry run
    (``--check``); ``verbosity`` 0-4 is ``-v`` to ``-vvvv``.
    """
    try:
        ansible_runner = importlib.import_module("ansible_runner")
    except ImportError:
        message = f"ansible_playbook needs ansible-runner, which is not installed: {INSTALL_HINT}"
        raise JobFailed(
            message, failure={"kind": "missing_dependency", "message": message}
        ) from None
    base = playbooks_dir()
    try:
        book = resolve_inside(base, playbook, "playbook")
        hosts = host_list(inventory)
        inventory_file = (
            None if hosts else resolve_inside(base, inventory, "inventory", allow_dir=True)
        )
    except ValueError as exc:
        raise JobFailed(str(exc), failure={"kind": "invalid_params", "message": str(exc)}) from None
    variables = extra_vars or {}
    translator = EventTranslator(Masker(secret_values(variables)), _plan(book), str(base))

    def on_event(event: Mapping[str, Any]) -> bool:
        try:
            entries = translator.handle(event)
        except Exception:  # a bug here must cost neither the run nor its output
            log.exception("jobtrail: could not translate an ansible-runner event")
            entries = [Entry(logging.INFO, translator.mask(str(event.get("stdout") or "")), {})]
        for entry in entries:
            if entry.text:
                output.log(entry.level, "%s", entry.text, extra={"jobtrail_fields": entry.fields})
        if event.get("event") in _PROGRESS_EVENTS:
            progress(translator.progress.pct, translator.step())
        return False  # nothing written to the runner's artifacts dir

    private = Path(tempfile.mkdtemp(prefix="jobtrail-ansible-"))  # 0700
    before = _descendants()
    try:
        if hosts:
            remote_tmp = None if _home_usable() else private / "remote-tmp"
            ini = _ini(hosts, remote_tmp)
            inventory_arg = str(_write_private(private / "inventory" / "hosts", ini))
        else:
            inventory_arg = str(inventory_file)
        if variables:
            _write_private(private / "env" / "extravars", json.dumps(variables))
        log.info("running playbook %s (inventory %s)", playbook, inventory)
        runner = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(base),
            playbook=str(book),
            inventory=inventory_arg,
            limit=limit or None,
            tags=_joined(tags),
            skip_tags=_joined(skip_tags),
            verbosity=verbosity or None,
            cmdline="--check" if check else None,
            envvars=_environment(),
            quiet=True,  # the worker captures stdout: echoing would log every line twice
            suppress_output_file=True,
            event_handler=on_event,
            # Our own callback keeps ansible-runner from installing SIGTERM/SIGINT handlers
            # over the worker's: a cancel must stay a cancel.
            cancel_callback=lambda: False,
        )
    finally:
        _stop_new_descendants(before)
        shutil.rmtree(private, ignore_errors=True)
    status, rc = str(runner.status), runner.rc
    if status != "successful":
        error, failure = translator.digest(playbook, rc, status)
        raise JobFailed(error, failure=failure)
    progress(100.0, translator.step())
    return {"playbook": playbook, "status": status, "rc": rc, "stats": translator.stats}


def _environment() -> dict[str, str]:
    """ansible-playbook must be found from a venv that is not activated, and print no colour."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", os.defpath)])
    return {"PATH": path, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0"}


def _home_usable() -> bool:
    """Whether Ansible can make its remote temp folder in this user's home: for a local
    host it expands ``~USER`` (passwd's home, not ``$HOME``), which a system user may lack."""
    try:
        home = pwd.getpwuid(os.geteuid()).pw_dir
    except KeyError:
        return False
    return os.path.isdir(home) and os.access(home, os.W_OK | os.X_OK)


def _ini(hosts: list[str], remote_tmp: Path | None = None) -> str:
    """The inventory of a host list; ``localhost`` runs here, with ``remote_tmp`` (if given)
    in place of Ansible's ``~USER/.ansible/tmp``."""
    lines = []
    for host in hosts:
        if host in LOCAL_HOSTS:
            line = f"{host} ansible_connection=local"
            line += f" ansible_python_interpreter={shlex.quote(sys.executable)}"
            if remote_tmp is not None:
                line += f" ansible_remote_tmp={shlex.quote(str(remote_tmp))}"
            lines.append(line)
        else:
            lines.append(host)
    return "\n".join(lines) + "\n"


def _joined(value: str | list[str] | None) -> str | None:
    if isinstance(value, list):
        return ",".join(value) or None
    return value or None


def _write_private(path: Path, text: str) -> Path:
    """A file only this user can read (0600), in a directory only this user can enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def _plan(book: Path) -> list[int] | None:
    """Tasks per play, for progress; None when the playbook cannot be read as plain YAML."""
    try:
        yaml = importlib.import_module("yaml")
        with book.open(encoding="utf-8") as handle:
            return estimate_plan(yaml.safe_load(handle))
    except Exception:  # vault tags, syntax errors, no PyYAML: progress just guesses
        return None


def _descendants() -> set[int]:
    try:
        return {p.pid for p in psutil.Process().children(recursive=True)}
    except psutil.Error:
        return set()


def _stop_new_descendants(before: set[int]) -> None:
    """ansible-playbook and its forks must not outlive the run (a cancel ends up here)."""
    try:
        procs = [p for p in psutil.Process().children(recursive=True) if p.pid not in before]
    except psutil.Error:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(procs, timeout=2.0)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=2.0)
