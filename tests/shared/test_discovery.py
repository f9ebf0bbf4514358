"""Discovery and validation of static workflow directories, and the `xnovu workflows` CLI."""

from __future__ import annotations

import json
import logging
import os
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from shared.db.enums import ChannelType
from shared.settings import Settings
from shared.workflows.cli import workflows as workflows_cli
from shared.workflows.definition import ProblemCode
from shared.workflows.discovery import (
    builtin_workflows_dir,
    derive_workflow_key,
    discover_all_static_workflows,
    static_workflow_dirs,
    validate_workflow_directories,
)
from shared.workflows.importer import SYNTHETIC_PACKAGE_PREFIX


def good_source(key: str, description: str = "a test workflow") -> str:
    return textwrap.dedent(
        f"""
        from shared.workflows.definition import define_workflow, email, sms

        workflow = define_workflow(
            {key!r},
            email(subject="Hello {{{{ name }}}}", body="<p>Hi {{{{ name }}}}</p>"),
            sms("Hi {{{{ name }}}}"),
            payload={{
                "type": "object",
                "properties": {{"name": {{"type": "string"}}, "age": {{"type": "integer"}}}},
                "required": ["name"],
            }},
            description={description!r},
        )
        """
    )


def make_workflow(root: Path, directory: str, source: str | None = None) -> Path:
    """A workflow directory under root; `source` None writes a valid workflow of the derived key."""
    path = root / directory
    path.mkdir(parents=True)
    if source is None:
        source = good_source(derive_workflow_key(directory))
    (path / "__init__.py").write_text(source)
    return path


def problem_codes(root: Path) -> dict[str, list[str]]:
    """Problem codes of a validation report, by workflow directory name."""
    out: dict[str, list[str]] = {}
    for problem in validate_workflow_directories([root]).problems:
        out.setdefault(Path(problem.path).name, []).append(problem.code)
    return out


# -- keys and directories ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("directory", "key"),
    [
        ("user_signup", "user-signup"),
        ("user-signup", "user-signup"),
        ("BuildingAlert", "building-alert"),
        ("buildingAlert", "building-alert"),
        ("HTTPError", "http-error"),
        ("order2Ship", "order2-ship"),
        ("weekly digest", "weekly-digest"),
        ("alerts", "alerts"),
    ],
)
def test_key_is_the_kebab_case_of_the_directory_name(directory: str, key: str) -> None:
    assert derive_workflow_key(directory) == key


def test_camel_case_directory_is_discovered_under_its_kebab_key(tmp_path: Path) -> None:
    make_workflow(tmp_path, "BuildingAlert")
    make_workflow(tmp_path, "user_signup")
    assert [w.key for w in discover_all_static_workflows([tmp_path])] == [
        "building-alert",
        "user-signup",
    ]


def test_hidden_and_underscore_directories_are_ignored(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, ".hidden", "raise RuntimeError('never imported')")
    make_workflow(tmp_path, "_private", "raise RuntimeError('never imported')")
    (tmp_path / "__pycache__").mkdir()
    (tmp_path / "notes").write_text("a file, not a directory")
    report = validate_workflow_directories([tmp_path])
    assert report.as_dict() == {"valid": True, "workflows": ["alerts"], "problems": []}


def test_missing_init_is_reported(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    (tmp_path / "digest").mkdir()
    (tmp_path / "digest" / "workflow.py").write_text("workflow = None")
    report = validate_workflow_directories([tmp_path])
    assert not report.valid
    assert report.workflows == ["alerts"]
    [problem] = report.problems
    assert problem.code is ProblemCode.MISSING_INIT
    assert problem.path == str(tmp_path / "digest")
    assert "__init__.py is missing" in problem.message


# -- importing from an arbitrary directory -----------------------------------------------------


def test_directory_off_sys_path_is_imported_under_a_unique_package(tmp_path: Path) -> None:
    root = tmp_path / "my workflows"
    make_workflow(root, "_common", "FOOTER = 'Sent by ACME'\n")
    path = make_workflow(
        root,
        "order_shipped",
        textwrap.dedent(
            """
            from shared.workflows.definition import define_workflow, sms
            from .content import BODY
            from .._common import FOOTER

            workflow = define_workflow("order-shipped", sms(BODY + " " + FOOTER))
            """
        ),
    )
    (path / "content.py").write_text("BODY = 'Order {{ orderId }} shipped.'\n")
    sys_path = list(sys.path)

    [workflow] = discover_all_static_workflows([root])

    assert workflow.channels[ChannelType.SMS].body == "Order {{ orderId }} shipped. Sent by ACME"
    assert sys.path == sys_path
    assert "order_shipped" not in sys.modules
    names = [n for n, m in list(sys.modules.items()) if getattr(m, "workflow", None) is workflow]
    assert len(names) == 1
    assert names[0].startswith(SYNTHETIC_PACKAGE_PREFIX)
    assert names[0].endswith(".order_shipped")


def test_same_directory_names_in_two_roots_do_not_clobber_each_other(tmp_path: Path) -> None:
    make_workflow(tmp_path / "a", "alerts", good_source("alerts", "from a"))
    make_workflow(tmp_path / "b", "alerts", good_source("alerts", "from b"))
    [from_a] = discover_all_static_workflows([tmp_path / "a"])
    [from_b] = discover_all_static_workflows([tmp_path / "b"])
    assert (from_a.description, from_b.description) == ("from a", "from b")
    # Discovering again returns the modules already imported, not new objects.
    assert discover_all_static_workflows([tmp_path / "a"])[0] is from_a


def test_directory_named_like_an_installed_module_does_not_shadow_it(tmp_path: Path) -> None:
    make_workflow(tmp_path, "json")
    [workflow] = discover_all_static_workflows([tmp_path])
    assert workflow.key == "json"
    assert sys.modules["json"] is json
    assert json.dumps({"still": "stdlib"}) == '{"still": "stdlib"}'


def test_reload_reimports_changed_files(tmp_path: Path) -> None:
    init = make_workflow(tmp_path, "alerts") / "__init__.py"
    [before] = discover_all_static_workflows([tmp_path])
    init.write_text(good_source("alerts", "changed, and longer than before"))
    os.utime(init, (init.stat().st_atime, init.stat().st_mtime + 5))
    assert discover_all_static_workflows([tmp_path]) == [before]
    [after] = discover_all_static_workflows([tmp_path], reload=True)
    assert after.description == "changed, and longer than before"


# -- problems ----------------------------------------------------------------------------------


def test_two_directories_deriving_one_key_are_both_rejected(tmp_path: Path) -> None:
    make_workflow(tmp_path, "user_signup")
    make_workflow(tmp_path, "user-signup")
    make_workflow(tmp_path, "alerts")
    assert problem_codes(tmp_path) == {
        "user-signup": [ProblemCode.DUPLICATE_KEY],
        "user_signup": [ProblemCode.DUPLICATE_KEY],
    }
    assert [w.key for w in discover_all_static_workflows([tmp_path])] == ["alerts"]


def test_a_key_in_two_roots_keeps_the_first(tmp_path: Path) -> None:
    make_workflow(tmp_path / "first", "alerts", good_source("alerts", "first"))
    second = make_workflow(tmp_path / "second", "alerts", good_source("alerts", "second"))
    [workflow] = discover_all_static_workflows([tmp_path / "first", tmp_path / "second"])
    assert workflow.description == "first"
    report = validate_workflow_directories([tmp_path / "first", tmp_path / "second"])
    assert [(p.path, p.code) for p in report.problems] == [(str(second), ProblemCode.DUPLICATE_KEY)]
    assert report.workflows == ["alerts"]


def test_key_mismatch_is_reported(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts", good_source("alert"))
    report = validate_workflow_directories([tmp_path])
    [problem] = report.problems
    assert problem.code is ProblemCode.KEY_MISMATCH
    assert "'alert'" in problem.message and "'alerts'" in problem.message
    assert discover_all_static_workflows([tmp_path]) == []


def test_module_without_workflow_object_is_reported(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts", "flow = None\n")
    make_workflow(tmp_path, "digest", "workflow = {'key': 'digest'}\n")
    assert problem_codes(tmp_path) == {
        "alerts": [ProblemCode.NO_WORKFLOW_OBJECT],
        "digest": [ProblemCode.WRONG_TYPE],
    }
    [wrong] = [
        p for p in validate_workflow_directories([tmp_path]).problems if p.code == "wrong_type"
    ]
    assert "dict, not a StaticWorkflow" in wrong.message


def test_import_error_carries_the_exception_text(tmp_path: Path) -> None:
    make_workflow(tmp_path, "missing_dep", "import xnovu_no_such_module_42\n")
    make_workflow(tmp_path, "raises", "x = 1\nraise RuntimeError('config not found')\n")
    make_workflow(tmp_path, "bad_python", "def broken(:\n")
    make_workflow(tmp_path, "exits", "import sys\nsys.exit(3)\n")
    problems = {Path(p.path).name: p for p in validate_workflow_directories([tmp_path]).problems}
    assert {name: p.code for name, p in problems.items()} == {
        "missing_dep": ProblemCode.IMPORT_ERROR,
        "raises": ProblemCode.IMPORT_ERROR,
        "bad_python": ProblemCode.IMPORT_ERROR,
        "exits": ProblemCode.IMPORT_ERROR,
    }
    assert "ModuleNotFoundError" in problems["missing_dep"].message
    assert "xnovu_no_such_module_42" in problems["missing_dep"].message
    assert "RuntimeError: config not found (at __init__.py:2)" in problems["raises"].message
    assert "SyntaxError" in problems["bad_python"].message
    assert "SystemExit: 3" in problems["exits"].message
    # A failed import leaves nothing half-initialised behind.
    leftovers = [n for n in sys.modules if n.startswith(SYNTHETIC_PACKAGE_PREFIX)]
    assert not [n for n in leftovers if n.endswith((".raises", ".missing_dep"))]


def test_definition_errors_are_reported_with_their_own_codes(tmp_path: Path) -> None:
    make_workflow(
        tmp_path,
        "faxes",
        "from shared.workflows.definition import ChannelContent, StaticWorkflow\n"
        "workflow = StaticWorkflow(key='faxes', channels={'FAX': ChannelContent(body='x')})\n",
    )
    make_workflow(
        tmp_path,
        "broken_template",
        "from shared.workflows.definition import define_workflow, email\n"
        "workflow = define_workflow('broken-template', email('Hi {{ name', '<p>{% if %}</p>'))\n",
    )
    report = validate_workflow_directories([tmp_path])
    by_dir: dict[str, list[tuple[str, str]]] = {}
    for p in report.problems:
        by_dir.setdefault(Path(p.path).name, []).append((p.code, p.message))
    assert [code for code, _ in by_dir["faxes"]] == [ProblemCode.BAD_CHANNEL]
    assert "'FAX'" in by_dir["faxes"][0][1]
    assert [code for code, _ in by_dir["broken_template"]] == [
        ProblemCode.JINJA_SYNTAX,
        ProblemCode.JINJA_SYNTAX,
    ]
    assert by_dir["broken_template"][0][1].startswith("EMAIL body: Jinja syntax error")


def test_report_lists_every_problem_and_the_good_workflows(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, "zeta_digest")
    (tmp_path / "no_init").mkdir()
    make_workflow(tmp_path, "mismatch", good_source("other"))
    make_workflow(tmp_path, "crashes", "1 / 0\n")
    make_workflow(tmp_path, "empty", "")
    report = validate_workflow_directories([tmp_path]).as_dict()
    assert report["valid"] is False
    assert report["workflows"] == ["alerts", "zeta-digest"]
    assert sorted((Path(p["path"]).name, p["code"]) for p in report["problems"]) == [
        ("crashes", "import_error"),
        ("empty", "no_workflow_object"),
        ("mismatch", "key_mismatch"),
        ("no_init", "missing_init"),
    ]
    assert all(set(p) == {"path", "code", "message"} for p in report["problems"])
    assert json.loads(json.dumps(report)) == report


def test_one_bad_workflow_does_not_stop_the_good_ones(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, "broken", "raise ImportError('nope')\n")
    make_workflow(tmp_path, "zeta")
    with caplog.at_level(logging.WARNING, logger="shared.workflows.discovery"):
        workflows = discover_all_static_workflows([tmp_path])
    assert [w.key for w in workflows] == ["alerts", "zeta"]
    assert any("broken" in r.getMessage() and "nope" in r.getMessage() for r in caplog.records)


def test_missing_or_empty_directories(tmp_path: Path) -> None:
    assert discover_all_static_workflows([tmp_path / "nowhere"]) == []
    [missing] = validate_workflow_directories([tmp_path / "nowhere"]).problems
    assert missing.code is ProblemCode.NOT_A_DIRECTORY
    [empty] = validate_workflow_directories([tmp_path]).problems
    assert empty.code is ProblemCode.NO_WORKFLOWS


def test_validating_one_workflow_instead_of_its_parent_gives_a_hint(tmp_path: Path) -> None:
    path = make_workflow(tmp_path, "alerts")
    [problem] = validate_workflow_directories([path]).problems
    assert problem.code is ProblemCode.NO_WORKFLOWS
    assert "validate its parent directory" in problem.message


# -- the built-in directory --------------------------------------------------------------------


def test_builtin_directory_holds_the_shipped_workflows() -> None:
    from shared.workflows.static import password_reset, user_signup

    workflows = {w.key: w for w in discover_all_static_workflows([builtin_workflows_dir()])}
    assert set(workflows) >= {"user-signup", "password-reset"}
    # Imported as the real package: the same objects as a plain import gives.
    assert workflows["user-signup"] is user_signup.workflow
    assert workflows["password-reset"] is password_reset.workflow
    assert validate_workflow_directories([builtin_workflows_dir()]).valid


def test_static_workflow_dirs_adds_the_configured_directory(tmp_path: Path) -> None:
    builtin = builtin_workflows_dir()
    assert static_workflow_dirs(Settings(XNOVU_WORKFLOWS_DIR=None)) == [builtin]
    assert static_workflow_dirs(Settings(XNOVU_WORKFLOWS_DIR=str(tmp_path))) == [
        builtin,
        tmp_path,
    ]
    # The built-in directory named again is not scanned twice.
    assert static_workflow_dirs(Settings(XNOVU_WORKFLOWS_DIR=str(builtin))) == [builtin]


def test_builtin_and_configured_directories_together(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, "user_signup", good_source("user-signup", "a copy"))
    dirs = static_workflow_dirs(Settings(XNOVU_WORKFLOWS_DIR=str(tmp_path)))
    workflows = {w.key: w for w in discover_all_static_workflows(dirs)}
    assert {"alerts", "user-signup", "password-reset"} <= set(workflows)
    assert workflows["user-signup"].description != "a copy"


# -- the CLI -----------------------------------------------------------------------------------


def test_cli_discover_prints_keys_channels_and_payload_fields(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, "broken", "raise RuntimeError('boom')\n")
    result = CliRunner().invoke(workflows_cli, ["discover", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == f"alerts  [EMAIL, SMS]  {tmp_path / 'alerts'}"
    assert "payload:  name: string, age?: integer" in result.stdout
    assert "broken" not in result.stdout
    assert "skipped" in result.stderr and "boom" in result.stderr
    assert "1 workflow(s) discovered, 1 skipped" in result.stderr


def test_cli_discover_json(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    result = CliRunner().invoke(workflows_cli, ["discover", "--json", str(tmp_path)])
    assert result.exit_code == 0
    out = json.loads(result.stdout)
    assert out["problems"] == []
    [alerts] = out["workflows"]
    assert alerts["key"] == "alerts"
    assert alerts["channels"] == ["EMAIL", "SMS"]
    assert alerts["payload_fields"] == [
        {"name": "name", "type": "string", "required": True},
        {"name": "age", "type": "integer", "required": False},
    ]


def test_cli_discover_defaults_to_the_configured_directories(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from shared.settings import get_settings

    monkeypatch.delenv("XNOVU_WORKFLOWS_DIR", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(workflows_cli, ["discover"])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0
    assert "password-reset  [EMAIL, SMS]" in result.stdout
    assert "user-signup  [EMAIL, IN_APP]" in result.stdout
    assert "resetUrl: string, expiresInMinutes: integer" in result.stdout


def test_cli_validate_exits_0_when_valid(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    result = CliRunner().invoke(workflows_cli, ["validate", str(tmp_path)])
    assert result.exit_code == 0
    assert result.stdout.strip() == "OK: 1 valid workflow(s): alerts"


def test_cli_validate_prints_each_problem_and_exits_1(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts")
    make_workflow(tmp_path, "mismatch", good_source("other"))
    (tmp_path / "no_init").mkdir()
    result = CliRunner().invoke(workflows_cli, ["validate", str(tmp_path)])
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'mismatch'}: [key_mismatch] ")
    assert lines[1] == f"{tmp_path / 'no_init'}: [missing_init] no_init/__init__.py is missing"
    assert lines[2] == "2 problem(s); valid workflows: alerts"


def test_cli_validate_json(tmp_path: Path) -> None:
    make_workflow(tmp_path, "alerts", "workflow = 42\n")
    result = CliRunner().invoke(workflows_cli, ["validate", "--json", str(tmp_path)])
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {
        "valid": False,
        "workflows": [],
        "problems": [
            {
                "path": str(tmp_path / "alerts"),
                "code": "wrong_type",
                "message": "`workflow` is a int, not a StaticWorkflow",
            }
        ],
    }


def test_cli_validate_missing_path_exits_1(tmp_path: Path) -> None:
    result = CliRunner().invoke(workflows_cli, ["validate", str(tmp_path / "nowhere")])
    assert result.exit_code == 1
    assert "[not_a_directory]" in result.stdout
