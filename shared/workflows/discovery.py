"""WorkflowDiscovery: static workflows found in directories, one package per workflow.

Rules (as the original XNovu's discovery, in Python):
- each subdirectory of a workflows directory is one workflow and must contain `__init__.py`;
- its key is the kebab-case of the directory name (`user_signup`, `UserSignup` → `user-signup`);
- directories starting with `.` or `_` are ignored (`__pycache__`, `_common` helpers);
- the package defines a module-level `workflow`, a StaticWorkflow whose key is that key.
An invalid workflow is logged and skipped; it never stops the others. How a directory is
imported (without touching sys.path) is shared.workflows.importer's business.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shared.settings import Settings
from shared.workflows.definition import (
    WORKFLOW_KEY_PATTERN,
    ProblemCode,
    StaticWorkflow,
    WorkflowDefinitionError,
)
from shared.workflows.importer import describe_import_error, import_workflow_package

log = logging.getLogger(__name__)

BUILTIN_PACKAGE = "shared.workflows.static"
WORKFLOW_ATTRIBUTE = "workflow"


@dataclass(frozen=True, slots=True)
class WorkflowProblem:
    """One reason a workflow (or a workflows directory) cannot be used."""

    path: str
    code: ProblemCode
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"path": self.path, "code": self.code.value, "message": self.message}


@dataclass(frozen=True)
class ValidationReport:
    """Every problem of a workflows directory, and the keys of the workflows that are fine."""

    workflows: list[str]
    problems: list[WorkflowProblem]

    @property
    def valid(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "workflows": list(self.workflows),
            "problems": [problem.as_dict() for problem in self.problems],
        }


@dataclass
class DiscoveredWorkflow:
    """One workflow directory as scanned: its key, the loaded workflow, what is wrong with it."""

    path: Path
    root: Path
    key: str
    workflow: StaticWorkflow | None = None
    problems: list[WorkflowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.workflow is not None and not self.problems

    def _problem(self, code: ProblemCode, message: str) -> None:
        self.problems.append(WorkflowProblem(str(self.path), code, message))


def derive_workflow_key(directory_name: str) -> str:
    """The kebab-case key of a workflow directory: `user_signup`, `BuildingAlert`, `HTTPError`
    → `user-signup`, `building-alert`, `http-error`."""
    name = re.sub(r"([A-Z]+)([A-Z][a-z])", r"\1-\2", directory_name)
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1-\2", name)
    name = re.sub(r"[^A-Za-z0-9]+", "-", name)
    return name.strip("-").lower()


def builtin_workflows_dir() -> Path:
    """The directory of the static workflows that ship with XNovu."""
    return Path(__file__).resolve().parent / "static"


def static_workflow_dirs(settings: Settings) -> list[Path]:
    """Where static workflows come from: the built-in directory, then XNOVU_WORKFLOWS_DIR."""
    dirs = [builtin_workflows_dir()]
    if settings.workflows_dir is not None:
        extra = settings.workflows_dir.expanduser()
        if not _same_path(extra, dirs[0]):
            dirs.append(extra)
    return dirs


def scan_workflow_directories(
    directories: Sequence[Path], *, reload: bool = False
) -> tuple[list[DiscoveredWorkflow], list[WorkflowProblem]]:
    """Import every workflow directory under each root and check it: the entries (ok or not)
    and the problems of the roots themselves. A key found in two directories of one root is a
    problem for both; a key already found in an earlier root is a problem for the later one."""
    entries: list[DiscoveredWorkflow] = []
    root_problems: list[WorkflowProblem] = []
    for root in directories:
        if not root.is_dir():
            root_problems.append(
                WorkflowProblem(
                    str(root), ProblemCode.NOT_A_DIRECTORY, f"{root} is not a directory"
                )
            )
            continue
        package = BUILTIN_PACKAGE if _same_path(root, builtin_workflows_dir()) else None
        entries.extend(_scan_root(root, package=package, reload=reload))
    _mark_duplicates(entries)
    return entries, root_problems


def discover_all_static_workflows(
    directories: Sequence[Path], *, reload: bool = False
) -> list[StaticWorkflow]:
    """The valid workflows of several directories (see `static_workflow_dirs`); on a key found
    in two of them the first directory wins. Problems are logged and skipped."""
    entries, root_problems = scan_workflow_directories(directories, reload=reload)
    for problem in root_problems:
        log.warning("static workflows directory skipped: %s", problem.message)
    return _usable(entries)


def validate_workflow_directories(paths: Sequence[Path]) -> ValidationReport:
    """Every problem of several workflows directories, duplicates across them included. Modules
    are imported afresh, so the report describes the files as they are now."""
    entries, problems = scan_workflow_directories(paths, reload=True)
    for root in paths:
        if root.is_dir() and not any(_same_path(e.root, root) for e in entries):
            hint = ""
            if (root / "__init__.py").is_file():
                hint = "; if it is one workflow, validate its parent directory"
            problems.append(
                WorkflowProblem(
                    str(root),
                    ProblemCode.NO_WORKFLOWS,
                    f"no workflow directories found in {root}{hint}",
                )
            )
    for entry in entries:
        problems.extend(entry.problems)
    return ValidationReport(
        workflows=sorted(entry.key for entry in entries if entry.ok), problems=problems
    )


# -- scanning -------------------------------------------------------------------------------


def _scan_root(root: Path, *, package: str | None, reload: bool) -> list[DiscoveredWorkflow]:
    entries = []
    for path in sorted(root.iterdir(), key=lambda p: p.name):
        if not path.is_dir() or path.name.startswith((".", "_")):
            continue
        entry = DiscoveredWorkflow(path=path, root=root, key=derive_workflow_key(path.name))
        _inspect(entry, package=package, reload=reload)
        entries.append(entry)
    return entries


def _inspect(entry: DiscoveredWorkflow, *, package: str | None, reload: bool) -> None:
    key_valid = bool(WORKFLOW_KEY_PATTERN.match(entry.key))
    if not key_valid:
        entry._problem(
            ProblemCode.INVALID_KEY,
            f"directory name {entry.path.name!r} gives no valid kebab-case key",
        )
    if not (entry.path / "__init__.py").is_file():
        entry._problem(ProblemCode.MISSING_INIT, f"{entry.path.name}/__init__.py is missing")
        return
    try:
        module = import_workflow_package(entry.path, entry.root, package=package, reload=reload)
    except WorkflowDefinitionError as exc:
        for problem in exc.problems:
            entry._problem(problem.code, problem.message)
        return
    except (Exception, SystemExit) as exc:
        log.debug("importing workflow %s failed", entry.path, exc_info=True)
        entry._problem(ProblemCode.IMPORT_ERROR, describe_import_error(exc, entry.path))
        return
    obj = getattr(module, WORKFLOW_ATTRIBUTE, None)
    if obj is None:
        entry._problem(
            ProblemCode.NO_WORKFLOW_OBJECT,
            f"{entry.path.name}/__init__.py defines no module-level `{WORKFLOW_ATTRIBUTE}`",
        )
        return
    if not isinstance(obj, StaticWorkflow):
        entry._problem(
            ProblemCode.WRONG_TYPE,
            f"`{WORKFLOW_ATTRIBUTE}` is a {type(obj).__name__}, not a StaticWorkflow",
        )
        return
    entry.workflow = obj
    if key_valid and obj.key != entry.key:
        entry._problem(
            ProblemCode.KEY_MISMATCH,
            f"workflow key {obj.key!r} does not match {entry.key!r}, the key its directory "
            f"{entry.path.name!r} gives",
        )


def _mark_duplicates(entries: list[DiscoveredWorkflow]) -> None:
    by_key: dict[str, list[DiscoveredWorkflow]] = {}
    for entry in entries:
        by_key.setdefault(entry.key, []).append(entry)
    for key, group in by_key.items():
        if len(group) < 2:
            continue
        first_root = [e for e in group if e.root == group[0].root]
        # Two directories of one root are equally ambiguous: neither is used. Across roots the
        # earlier root (the built-in one) keeps its workflow.
        keeper = group[0] if len(first_root) == 1 else None
        for entry in group:
            if entry is keeper:
                continue
            others = ", ".join(str(e.path) for e in group if e is not entry)
            entry._problem(ProblemCode.DUPLICATE_KEY, f"key {key!r} is also derived by {others}")


def _usable(entries: list[DiscoveredWorkflow]) -> list[StaticWorkflow]:
    usable = []
    for entry in entries:
        for problem in entry.problems:
            log.warning(
                "static workflow %s skipped: %s [%s]", entry.path, problem.message, problem.code
            )
        if entry.ok and entry.workflow is not None:
            usable.append(entry.workflow)
    return usable


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False
