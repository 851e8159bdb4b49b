"""docs/cli.md documents every command and every option that ``--help`` shows.

Each command has a section headed ``robis-edge COMMAND`` (``## robis-edge serve``; a command's
targets ``### robis-edge export inpformer``), and each of its option strings appears in that
section in backticks (`` `--flag` `` or `` `--flag VALUE` ``)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from edge_runtime.cli import build_parser

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, its parser) for every command and target, depth first."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def _sections(text: str) -> dict[str, str]:
    """Heading text of each ``#`` heading → the text up to the next heading."""
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"#+\s+(.*?)\s*$", line)
        if m:
            current = m.group(1)
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def test_every_command_and_option_is_in_docs_cli_md():
    sections = _sections(DOC.read_text(encoding="utf-8"))
    missing = []
    commands = list(_commands(build_parser()))
    assert len(commands) >= 13
    for path, parser in commands:
        title = "robis-edge " + " ".join(path)
        if title not in sections:
            missing.append(f"no section '{title}'")
            continue
        body = sections[title]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            for flag in action.option_strings:
                if not re.search("`" + re.escape(flag) + r"(?:[ =][^`\n]*)?`", body):
                    missing.append(f"{title}: `{flag}`")
    assert not missing, "docs/cli.md lacks: " + "; ".join(missing)


def test_the_check_sees_a_missing_option():
    body = _sections("## robis-edge x\n- `--alpha N`: a\n- `--beta`: b\n")["robis-edge x"]
    assert re.search("`" + re.escape("--alpha") + r"(?:[ =][^`\n]*)?`", body)
    assert not re.search("`" + re.escape("--alph") + r"(?:[ =][^`\n]*)?`", body)
