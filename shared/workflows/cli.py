"""`xnovu workflows discover|validate [PATH...]`: what a workflows directory holds, and what is
wrong with it. Without PATH: the built-in directory and XNOVU_WORKFLOWS_DIR."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from shared.settings import get_settings
from shared.workflows.discovery import (
    DiscoveredWorkflow,
    scan_workflow_directories,
    static_workflow_dirs,
    validate_workflow_directories,
)

_paths_argument = click.argument(
    "paths",
    metavar="[PATH]...",
    nargs=-1,
    type=click.Path(file_okay=True, dir_okay=True, path_type=Path),
)
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


@click.group("workflows")
def workflows() -> None:
    """Discover and validate static workflows (one package per directory)."""


@workflows.command("discover")
@_paths_argument
@_json_option
def discover(paths: tuple[Path, ...], as_json: bool) -> None:
    """List the workflows found in each PATH: key, channels and payload fields. Workflows that
    cannot be used are listed on stderr (run `validate` for every detail)."""
    entries, root_problems = scan_workflow_directories(_roots(paths))
    found = [entry for entry in entries if entry.ok]
    problems = [*root_problems, *(p for entry in entries for p in entry.problems)]
    if as_json:
        out = {
            "workflows": [_describe(entry) for entry in found],
            "problems": [problem.as_dict() for problem in problems],
        }
        click.echo(json.dumps(out, indent=2))
        return
    for entry in found:
        info = _describe(entry)
        click.echo(f"{info['key']}  [{', '.join(info['channels'])}]  {info['path']}")
        if info["name"]:
            click.echo(f"  name:     {info['name']}")
        if info["tags"]:
            click.echo(f"  tags:     {', '.join(info['tags'])}")
        click.echo(f"  payload:  {_fields_line(info['payload_fields'])}")
    skipped = {p.path for p in problems}
    for problem in problems:
        click.echo(f"skipped {problem.path}: {problem.message} [{problem.code}]", err=True)
    click.echo(f"{len(found)} workflow(s) discovered, {len(skipped)} skipped", err=True)


@workflows.command("validate")
@_paths_argument
@_json_option
def validate(paths: tuple[Path, ...], as_json: bool) -> None:
    """Report every problem of each PATH; exit status 1 when there is any, 0 otherwise."""
    report = validate_workflow_directories(_roots(paths))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=2))
    else:
        for problem in report.problems:
            click.echo(f"{problem.path}: [{problem.code}] {problem.message}")
        if report.valid:
            keys = ", ".join(report.workflows)
            click.echo(f"OK: {len(report.workflows)} valid workflow(s): {keys}")
        else:
            click.echo(
                f"{len(report.problems)} problem(s); valid workflows: "
                f"{', '.join(report.workflows) or 'none'}"
            )
    sys.exit(0 if report.valid else 1)


def _roots(paths: Sequence[Path]) -> list[Path]:
    return list(paths) if paths else static_workflow_dirs(get_settings())


def _describe(entry: DiscoveredWorkflow) -> dict[str, Any]:
    workflow = entry.workflow
    assert workflow is not None
    return {
        "key": workflow.key,
        "name": workflow.name,
        "description": workflow.description,
        "path": str(entry.path),
        "channels": [channel.value for channel in workflow.channels],
        "tags": list(workflow.tags),
        "payload_fields": payload_fields(workflow.payload_schema),
    }


def payload_fields(schema: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The top-level properties of a payload schema: `{name, type, required}` each."""
    if not schema:
        return []
    required = set(schema.get("required", []))
    properties = schema.get("properties", {})
    return [
        {"name": name, "type": _type_of(prop), "required": name in required}
        for name, prop in properties.items()
    ]


def _type_of(prop: Any) -> str:
    if not isinstance(prop, dict):
        return "any"
    if "anyOf" in prop or "oneOf" in prop:
        variants = [_type_of(v) for v in prop.get("anyOf") or prop.get("oneOf") or []]
        return " | ".join(dict.fromkeys(variants)) or "any"
    kind = prop.get("type")
    if isinstance(kind, list):
        text = " | ".join(str(k) for k in kind)
    elif isinstance(kind, str):
        text = kind
    elif "$ref" in prop:
        text = "object"
    else:
        text = "any"
    if "format" in prop:
        text += f" ({prop['format']})"
    return text


def _fields_line(fields: list[dict[str, Any]]) -> str:
    if not fields:
        return "(any)"
    return ", ".join(f"{f['name']}{'' if f['required'] else '?'}: {f['type']}" for f in fields)
