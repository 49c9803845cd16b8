"""Values rebuilt when their files change; a bad update keeps the previous value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from zonestore_node.filewatch import Watched


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _parse(path: Path) -> int:
    text = path.read_text().strip()
    if not text:
        raise ValueError("empty")
    return int(text)


def _write(path: Path, text: str, bump: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(bump, bump))  # a distinct mtime even within one clock tick


def test_a_changed_file_is_read_again_after_the_interval(tmp_path: Path) -> None:
    path, clock = tmp_path / "v", Clock()
    _write(path, "1", 1_000)
    watched = Watched([path], lambda: _parse(path), "test", reload_every=2.0, clock=clock)
    _write(path, "2", 2_000)
    assert watched.current() == 1  # not looked at again yet
    clock.now = 2.0
    assert watched.current() == 2
    assert watched.generation == 2


def test_a_broken_update_keeps_the_previous_value_until_it_is_fixed(tmp_path: Path) -> None:
    path, clock = tmp_path / "v", Clock()
    _write(path, "1", 1_000)
    watched = Watched([path], lambda: _parse(path), "test", reload_every=1.0, clock=clock)
    _write(path, "", 2_000)
    clock.now = 1.0
    assert watched.current() == 1
    _write(path, "3", 3_000)
    clock.now = 2.0
    assert watched.current() == 3


def test_a_bad_file_at_start_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "v"
    _write(path, "", 1_000)
    with pytest.raises(ValueError, match="empty"):
        Watched([path], lambda: _parse(path), "test")
