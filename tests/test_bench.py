"""The benchmark's tools: what they leave behind when they cannot run."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from bench import profile


def test_profile_without_py_spy_says_so_and_leaves_no_directory(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without py-spy, ``python -m bench.profile`` exits with how to get it and makes no directory."""
    monkeypatch.setattr(profile.shutil, "which", lambda *args, **kwargs: None)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))

    with pytest.raises(SystemExit, match="py-spy not found: pip install py-spy"):
        profile.main([])

    assert list(tmp_path.iterdir()) == []
