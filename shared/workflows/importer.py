"""Importing a workflow directory as a package, without touching sys.path.

The built-in directory is the real package `shared.workflows.static`. Any other directory
(XNOVU_WORKFLOWS_DIR) becomes a synthetic package `xnovu_workflows_<hash of its path>` and each
workflow a subpackage of it, so names never clash with installed packages or with another
directory, and relative imports work inside a workflow (`from .content import BODY`) and across
it (`from .._common import footer`).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.util
import keyword
import re
import sys
import threading
import traceback
import types
from pathlib import Path

SYNTHETIC_PACKAGE_PREFIX = "xnovu_workflows_"

# Imports of user directories register synthetic packages in sys.modules; one at a time.
_import_lock = threading.RLock()


def import_workflow_package(
    path: Path, root: Path, *, package: str | None, reload: bool
) -> types.ModuleType:
    """Import the package of one workflow directory under a name unique to its path; `package`
    names the importable package `root` is, None for a directory imported synthetically."""
    with _import_lock:
        if package is not None and path.name.isidentifier():
            name = f"{package}.{path.name}"
            if reload:
                _forget(name)
            return importlib.import_module(name)
        parent = package if package is not None else _synthetic_package(root)
        importlib.import_module(parent)
        name = f"{parent}.{_module_segment(path.name)}"
        if not reload and name in sys.modules:
            return sys.modules[name]
        _forget(name)
        importlib.invalidate_caches()
        spec = importlib.util.spec_from_file_location(
            name, path / "__init__.py", submodule_search_locations=[str(path)]
        )
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {path / '__init__.py'}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            _forget(name)
            raise
        return module


def describe_import_error(exc: BaseException, path: Path) -> str:
    """The exception, and where in the workflow directory it was raised."""
    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if _is_within(Path(frame.filename), path):
            where = f" (at {Path(frame.filename).name}:{frame.lineno})"
            break
    return f"import failed: {type(exc).__name__}: {exc}{where}"


def _synthetic_package(root: Path) -> str:
    """Register (once) an empty package whose __path__ is the root, so that the workflows below
    it are its subpackages, whatever the root is called and wherever it lives."""
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    name = f"{SYNTHETIC_PACKAGE_PREFIX}{digest}"
    if name not in sys.modules:
        spec = importlib.machinery.ModuleSpec(name, loader=None, is_package=True)
        spec.submodule_search_locations = [str(root.resolve())]
        module = importlib.util.module_from_spec(spec)
        module.__doc__ = f"Static workflows of {root.resolve()}"
        sys.modules[name] = module
    return name


def _module_segment(directory_name: str) -> str:
    if directory_name.isidentifier() and not keyword.iskeyword(directory_name):
        return directory_name
    # `user-signup` and `user_signup` both exist when their keys clash; keep them apart.
    digest = hashlib.sha256(directory_name.encode()).hexdigest()[:8]
    return "wf_" + re.sub(r"\W", "_", directory_name) + "_" + digest


def _forget(name: str) -> None:
    """Drop a module and its submodules, so the next import runs the files again."""
    for loaded in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[loaded]


def _is_within(file: Path, directory: Path) -> bool:
    try:
        file.resolve().relative_to(directory.resolve())
    except (ValueError, OSError):
        return False
    return True
