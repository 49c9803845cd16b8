"""The images users build: entrypoints exist, node flags parse, nobody runs as root."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from zonestore_node import cli

ROOT = Path(__file__).resolve().parents[2]


def _stages() -> dict[str, list[str]]:
    stages: dict[str, list[str]] = {}
    current = ""
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        match = re.match(r"FROM \S+ AS (\w+)", line)
        if match:
            current = match.group(1)
            stages[current] = []
        elif current and line.strip() and not line.startswith("#"):
            stages[current].append(line)
    return stages


def _instruction(lines: list[str], name: str) -> list[str]:
    found = [json.loads(line[len(name) + 1 :]) for line in lines if line.startswith(name + " ")]
    assert found, f"no {name}"
    return list(found[-1])


def test_both_images_run_as_a_non_root_user() -> None:
    stages = _stages()
    for target in ("node", "operator"):
        users = [line for line in stages[target] if line.startswith("USER ")]
        assert users, f"{target} image sets no USER"
        assert not users[-1].split()[1].startswith(("0", "root"))


def test_image_entrypoints_are_installed_console_scripts() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    stages = _stages()
    assert _instruction(stages["node"], "ENTRYPOINT") == ["zonestore"]
    assert _instruction(stages["operator"], "ENTRYPOINT") == ["zonestore-operator"]
    assert {"zonestore", "zonestore-operator"} <= set(scripts)


def test_the_node_images_default_command_parses() -> None:
    parser = cli.build_parser()
    args = parser.parse_args(_instruction(_stages()["node"], "CMD"))
    assert args.command == "serve"
    assert args.peer_addr == "0.0.0.0:7081"
