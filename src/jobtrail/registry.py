"""Job types: plain functions registered with ``@job("name")``.

Params are validated against the function's signature and annotations (through a pydantic
model built from it) in the server, before a job is queued, so a typo fails the request
instead of a worker minutes later. Validation is strict, as for JSON: ``true`` is not an int
and ``"3"`` is not one either (an int is still a float: JSON has one number type). Callers
that hold text, such as the CLI's ``key=value``, convert it first: they know the schema.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from jobtrail.errors import InvalidParams, JobModuleError, UnknownJobType
from jobtrail.limits import Limits
from jobtrail.models import is_job_type_name
from jobtrail.sandbox_paths import SandboxPaths

F = TypeVar("F", bound=Callable[..., Any])
Validator = Callable[[dict[str, Any]], dict[str, Any]]
Hint = Callable[[], str]
BUILTIN_JOB_MODULES = ("jobtrail.jobtypes.builtin", "jobtrail.jobtypes.ansible.job")


@dataclass(frozen=True)
class JobType:
    name: str
    func: Callable[..., Any]
    description: str
    model: type[pydantic.BaseModel]
    check: Validator | None = None
    hints: Mapping[str, Hint] = field(default_factory=dict)
    limits: Limits = field(default_factory=Limits)  # its defaults; a submission's win
    sandbox_paths: SandboxPaths = field(default_factory=SandboxPaths)  # bound under --sandbox

    def validate(self, params: dict[str, Any]) -> dict[str, Any]:
        """Checked params, or InvalidParams naming each bad parameter.

        Validated as the JSON they came as, in strict mode: JSON strings still become dates,
        paths or enum members, but a bool or a string is never taken for a number."""
        try:
            raw = json.dumps(params, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise InvalidParams(self.name, [f"params: must be JSON values ({exc})"]) from None
        try:
            model = self.model.model_validate_json(raw, strict=True)
        except pydantic.ValidationError as exc:
            problems = [_describe(err) for err in exc.errors()]
            named = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            problems += [hint() for name, hint in self.hints.items() if name in named]
            raise InvalidParams(self.name, problems) from None
        values = model.model_dump(mode="json")
        return self.check(values) if self.check else values

    def schema(self) -> dict[str, Any]:
        return self.model.model_json_schema()


def _describe(err: Any) -> str:
    where = ".".join(str(p) for p in err["loc"]) or "params"
    if err["type"] == "missing":
        return f"{where}: required parameter is missing"
    if err["type"] == "extra_forbidden":
        return f"{where}: unknown parameter"
    if str(err["type"]).endswith("_type"):  # say what was sent: `"3"` and `3` look alike
        return f"{where}: {err['msg']} (got {_json_kind(err.get('input'))})"
    return f"{where}: {err['msg']}"


def _json_kind(value: Any) -> str:
    """What a JSON value is, in JSON's words, without echoing it (it may be a secret)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "an array" if isinstance(value, list) else "an object"


_REGISTRY: dict[str, JobType] = {}
# False in a process that validates no params, the distributed job's image (one pydantic
# model per type was 40 % of its start): ``skip_param_models``
_BUILD_MODELS = [True]


def skip_param_models() -> None:
    """From now on ``@job`` builds no params model (``JobType.model`` is BaseModel): for a
    process that only runs jobs whose params were validated before they were queued."""
    _BUILD_MODELS[0] = False


def _model_for(name: str, func: Callable[..., Any]) -> type[pydantic.BaseModel]:
    fields: dict[str, Any] = {}
    hints = inspect.get_annotations(func, eval_str=True)
    for param in inspect.signature(func).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            raise TypeError(
                f"job {name!r}: *args/**kwargs cannot be validated; name each parameter"
            )
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        fields[param.name] = (annotation, default)
    return pydantic.create_model(
        f"{name}_params", __config__=pydantic.ConfigDict(extra="forbid"), **fields
    )


def job(
    name: str,
    *,
    check: Validator | None = None,
    hints: Mapping[str, Hint] | None = None,
    memory_mb: int | None = None,
    timeout_s: float | None = None,
    sandbox_paths: SandboxPaths | None = None,
) -> Callable[[F], F]:
    """Register ``func`` as the job type ``name``; the function itself is returned unchanged.

    ``memory_mb`` and ``timeout_s`` are the type's default limits: a submission's own win
    over them, and they over the server's (``serve --job-memory-mb``, ``--job-timeout``).

    ``check`` runs after type validation in the server, for rules a signature cannot express
    (say, a path that must stay inside a directory); it raises InvalidParams. ``hints`` maps
    a parameter to a function whose text is added to the 422 when that parameter is wrong or
    missing (say, the playbooks that exist).

    ``sandbox_paths`` are the host paths its jobs need under ``--sandbox``, which otherwise
    shows them a read-only system with its own /tmp (``jobtrail.sandbox_paths``).
    """
    if not is_job_type_name(name):
        raise ValueError(f"job type names are lowercase letters, digits and _; got {name!r}")
    if memory_mb is not None and (type(memory_mb) is not int or memory_mb < 1):
        raise ValueError(f"job {name!r}: memory_mb must be a whole number of MB >= 1")
    if timeout_s is not None and not float(timeout_s) > 0:
        raise ValueError(f"job {name!r}: timeout_s must be a number of seconds > 0")
    limits = Limits(memory_mb, None if timeout_s is None else float(timeout_s))
    if sandbox_paths is not None:
        if not isinstance(sandbox_paths, SandboxPaths):
            raise ValueError(f"job {name!r}: sandbox_paths must be a SandboxPaths(read=, write=)")
        sandbox_paths.check(name)

    def register(func: F) -> F:
        doc = inspect.getdoc(func) or ""
        model = _model_for(name, func) if _BUILD_MODELS[0] else pydantic.BaseModel
        _REGISTRY[name] = JobType(
            name,
            func,
            doc.split("\n\n")[0],
            model,
            check,
            hints or {},
            limits,
            sandbox_paths or SandboxPaths(),
        )
        return func

    return register


def get_job_type(name: str) -> JobType:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownJobType(name, list(_REGISTRY)) from None


def job_types() -> dict[str, JobType]:
    return dict(_REGISTRY)


def declared_sandbox_paths() -> dict[str, SandboxPaths]:
    """The registered types that declare sandbox paths, and theirs."""
    return {name: t.sandbox_paths for name, t in _REGISTRY.items() if t.sandbox_paths}


def import_job_modules(modules: Iterable[str] = (), app_dir: str | None = None) -> None:
    """Import the built-in job types, then the modules that register the user's (in the
    server, a pool worker, ``jobtrail worker``), ``app_dir`` first on ``sys.path`` (as
    uvicorn's ``--app-dir``: a module in the folder jobtrail runs from is found). Pool
    workers get the same ``sys.path`` through ``WorkerSettings.sys_path``."""
    if app_dir is not None:
        path = os.path.abspath(app_dir)
        if path not in sys.path:
            sys.path.insert(0, path)
    for module in (*BUILTIN_JOB_MODULES, *modules):
        try:
            importlib.import_module(module)
        except Exception as exc:  # whatever the module raised: one line that names it
            raise JobModuleError(module, exc) from exc
