"""Fixtures of the end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from support import ROOT
from tmux import Tmux


@pytest.fixture
def term(run_env: dict[str, str]) -> Iterator[Tmux]:
    env = {**run_env, "PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root")}
    tmux = Tmux(env, cols=100, rows=30)
    tmux.type(f"cd {ROOT}")
    yield tmux
    tmux.kill()
