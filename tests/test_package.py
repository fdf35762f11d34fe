"""Packaging invariants."""

import importlib
import sys
from pathlib import Path

from conftest import REPO_ROOT


def test_platform_is_the_stdlib_module():
    assert not (REPO_ROOT / "platform" / "__init__.py").exists(), "platform/__init__.py would shadow stdlib platform"
    module = importlib.import_module("platform")
    assert hasattr(module, "python_version") and hasattr(module, "system")
    assert Path(module.__file__).parent != REPO_ROOT / "platform"


def test_console_script_entry_point():
    from ddrm.cli import main

    assert callable(main)
    assert "ddrm" in sys.modules
