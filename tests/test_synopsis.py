"""README and ``--help`` agree: every command's options, as click declares them, are the
options of its synopsis in the README's "Command line" section, no more and no fewer.

A command that adds an option (or a new command) must add it to the synopsis.  The
synopsis grammar: ``zscore CMD ...`` lines (and their indented continuations) belong to
CMD; ``a, b, c: ...`` lines to the commands named, ``every command: ...`` to all;
``[all X options]`` takes X's.  Long option names are compared (``--report/--no-report``
gives both).
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli import cli, main

README = Path(__file__).resolve().parent.parent / "README.md"
_LONG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def synopsis() -> dict[str, set[str]]:
    """Per command, the long options the README's synopsis gives it."""
    text = README.read_text().split("\n## Command line\n", 1)[1]
    block = text.split("```\n", 2)[1]
    lines: dict[str, list[str]] = {}
    owners: list[str] = []
    for line in block.splitlines():
        if line.startswith("zscore "):
            owners = [line.split()[1]]
        elif not line[:1].isspace():
            label, line = line.split(":", 1)
            owners = list(cli.commands) if label == "every command" else \
                [c.strip() for c in label.split(",")]
        for owner in owners:
            lines.setdefault(owner, []).append(line)
    out = {}
    for command, own in lines.items():
        body = " ".join(own)
        for other in re.findall(r"\[all (\w+) options\]", body):
            body += " " + " ".join(lines[other])
        out[command] = set(_LONG.findall(body))
    return out


def declared(command: str) -> set[str]:
    """The long options click gives ``zscore COMMAND`` (``--help`` included)."""
    cmd = cli.commands[command]
    parent = click.Context(cli, info_name="zscore", **cli.context_settings)
    params = cmd.get_params(click.Context(cmd, info_name=command, parent=parent))
    return {o for p in params for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def test_every_command_has_the_options_its_readme_synopsis_shows():
    documented = synopsis()
    assert set(documented) == set(cli.commands), "a command is missing from the synopsis"
    problems = []
    for command in cli.commands:
        have = declared(command)
        if documented[command] != have:
            problems.append(f"zscore {command}: --help has {sorted(have - documented[command])} "
                            f"not in the README, README has {sorted(documented[command] - have)}"
                            " not in --help")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_accepts_quiet_and_verbose(command, capsys):
    # --help after -q -v: click parses both first, so an unknown one fails here.
    assert main([command, "-q", "-v", "--help"]) == 0
    assert "-q, --quiet" in capsys.readouterr().out


def test_quiet_and_verbose_on_a_command_that_has_no_progress(tmp_path):
    stats = tmp_path / "s.json"
    data = tmp_path / "d"
    run = [sys.executable, "-m", "pipeline"]
    subprocess.run([*run, "sample", str(data), "--rows", "2000", "-q"], check=True)
    subprocess.run([*run, "fit", str(data), "--stats", str(stats), "--exclude", "id,label",
                    "-q"], check=True, capture_output=True)
    loud = subprocess.run([*run, "merge", str(stats), str(stats), "-o", str(tmp_path / "m.json"),
                           "-v"], capture_output=True, text=True)
    assert loud.returncode == 2 and "same input" in loud.stderr  # -v accepted; still refused
    inspect = subprocess.run([*run, "inspect", str(stats), "-q"], capture_output=True, text=True)
    assert inspect.returncode == 0 and "f_normal" in inspect.stdout
