"""The house rules that keep the codebase in shape (DESIGN.md), checked by reading it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from career_relay import settings_doc
from career_relay.cli import _parser

REPO = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def _package_files(name: str) -> list[Path]:
    return sorted((REPO / name).rglob("*.py"))


def test_imports_run_one_way() -> None:
    problems = []
    for path in _package_files("career_relay"):
        if path.name == "serve.py":
            continue  # the composition root wires both sides
        for mod in _imports(path):
            if mod.split(".")[0] in ("gateway", "consent_site"):
                problems.append(f"{path.relative_to(REPO)} imports {mod}")
    for side, other in (("gateway", "consent_site"), ("consent_site", "gateway")):
        for path in _package_files(side):
            for mod in _imports(path):
                if mod.split(".")[0] == other:
                    problems.append(f"{path.relative_to(REPO)} imports {mod}")
    assert problems == []


# Every module a message passes through between DATA and the 250 (issue: "the email
# package is not used on the per-message path"; DESIGN decision 5).
PER_MESSAGE = ("handler", "pipeline", "rejection", "detect", "detect_rules",
               "detect_overrides", "detect_text",
               "mailtext", "inject", "part_writing", "html_context", "mime", "textparts",
               "charsets", "policy", "message", "dkim", "spool", "journal", "envelope")


def test_the_per_message_path_never_parses_with_the_email_package() -> None:
    """The first look must cost almost nothing: no email.parser, no message_from_bytes,
    no header parser of the email package on any module the SMTP path runs."""
    problems = []
    for name in PER_MESSAGE:
        path = REPO / "gateway" / f"{name}.py"
        text = path.read_text(encoding="utf-8")
        for mod in _imports(path):
            if mod.startswith("email") and mod not in ("email.utils",):
                problems.append(f"{name}.py imports {mod}")
        for call in ("message_from_bytes", "BytesParser", "BytesHeaderParser",
                     "getaddresses", "decode_header"):
            if call + "(" in text:
                problems.append(f"{name}.py calls {call}")
    assert problems == []


def test_the_rejection_step_reads_as_its_outcomes() -> None:
    """pipeline.accept lists the steps; the step ends in one of three named outcomes."""
    from gateway import rejection

    assert {c.__name__ for c in rejection.Outcome.__args__} == {  # type: ignore[attr-defined]
        "Ordinary", "NotInjectable", "Rejection"}
    accept = (REPO / "gateway" / "pipeline.py").read_text(encoding="utf-8")
    body = accept.split("async def accept", 1)[1].split("\n    async def ", 1)[0]
    steps = ["_whose", "strip_relay_headers", "_rejection_step", "_store", "_report",
             "submit"]
    assert [body.index(step) for step in steps] == sorted(body.index(s) for s in steps)


def test_frameworks_stay_on_their_side() -> None:
    problems = []
    for pkg in ("career_relay", "consent_site", "gateway"):
        for path in _package_files(pkg):
            for mod in _imports(path):
                if mod.startswith("aiosmtpd") and pkg != "gateway":
                    problems.append(f"{path.relative_to(REPO)} imports {mod}")
                if mod.startswith("aiohttp") and pkg != "consent_site":
                    problems.append(f"{path.relative_to(REPO)} imports {mod}")
    assert problems == []


def test_configuration_reference_is_generated_from_the_table() -> None:
    committed = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == settings_doc.render(), "run `make docs` and commit the result"


def test_every_command_is_documented() -> None:
    cli_doc = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    subparsers = next(a for a in _parser()._actions if a.dest == "command")
    commands = list(subparsers.choices)  # type: ignore[attr-defined]
    assert len(commands) >= 8
    for command in commands:
        assert f"career-relay {command}" in cli_doc, command


def test_readme_shows_the_two_commands() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme and "make test" in readme


def test_ci_runs_make_test() -> None:
    assert "make test" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


def test_every_route_of_the_site_is_documented(make_config: object) -> None:
    from career_relay import settings as settings_mod
    from consent_site.app import create_app

    settings = settings_mod.load(make_config())  # type: ignore[operator]
    app = create_app(settings)
    site_doc = (REPO / "docs" / "consent-site.md").read_text(encoding="utf-8")
    admin_doc = (REPO / "docs" / "admin.md").read_text(encoding="utf-8")
    api_doc = (REPO / "docs" / "integrations" / "ats-api.md").read_text(encoding="utf-8")
    agency_doc = (REPO / "docs" / "integrations" / "for-the-agency.md").read_text(
        encoding="utf-8")
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert "/c/{token}" in routes and "/admin/login" in routes
    for route in routes:
        shown = "/static/site.css" if route == "/static" else route
        # The admin pages and the company API have their own documents; the candidate's
        # pages theirs.
        doc = admin_doc if route.startswith("/admin/") else \
            agency_doc if route.startswith("/api/v1/agency/") else \
            api_doc if route.startswith("/api/") else site_doc
        assert f"`{shown}`" in doc or f" {shown}`" in doc, route
    from consent_site.candidate import SITE

    app[SITE].close()


_DRIVERS = ("sqlite3", "sqlite_utils", "psycopg", "psycopg_pool")
# SQL as the ledger writes it: a statement's verb and what it acts on.
_SQL = re.compile(r"\b(SELECT\b[^\"']*\bFROM|INSERT\s+INTO|UPDATE\s+\w+\s+SET|DELETE\s+FROM"
                  r"|CREATE\s+(TABLE|INDEX|TRIGGER)|PRAGMA)\s", re.IGNORECASE)


def _outside_the_ledger() -> list[Path]:
    ledger = REPO / "career_relay" / "ledger"
    return [p for pkg in ("career_relay", "consent_site", "gateway") for p in _package_files(pkg)
            if ledger not in p.parents]


def test_the_ledger_is_entered_by_its_face_only() -> None:
    """Outside career_relay/ledger/, code imports names the package's __init__ exports
    (``__all__``), never a module inside it (DESIGN: one public face)."""
    import career_relay.ledger

    face = set(career_relay.ledger.__all__)
    problems = []
    for path in _outside_the_ledger():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                problems += [f"{path.relative_to(REPO)} imports {a.name}" for a in node.names
                             if a.name.startswith("career_relay.ledger")]
            elif isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.startswith("career_relay.ledger"):
                if node.module != "career_relay.ledger":
                    problems.append(f"{path.relative_to(REPO)} imports {node.module}")
                problems += [f"{path.relative_to(REPO)} imports {a.name} (not in __all__)"
                             for a in node.names if a.name not in face]
    assert problems == []


def test_sql_and_the_database_drivers_live_in_the_ledger() -> None:
    """No SQL and no database driver outside career_relay/ledger/: the second backend
    (PostgreSQL) then needs nothing outside the package."""
    problems = []
    for path in _outside_the_ledger():
        text = path.read_text(encoding="utf-8")
        problems += [f"{path.relative_to(REPO)} imports {mod}" for mod in _imports(path)
                     if mod.split(".")[0] in _DRIVERS]
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and \
                    _SQL.search(node.value) and not _docstring_like(node.value):
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} holds SQL")
    assert problems == []


def _docstring_like(text: str) -> bool:
    return "\n" in text and not text.lstrip().upper().startswith(("SELECT", "INSERT", "UPDATE"))


def test_no_module_of_the_core_is_over_350_lines() -> None:
    """Small modules, one concept each (DESIGN, house style 9; issue 13's done-when)."""
    long = {str(p.relative_to(REPO)): n for p in _package_files("career_relay")
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > 350}
    assert long == {}
