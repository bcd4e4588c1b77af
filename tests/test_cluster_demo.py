"""The README's course demo on Redis runs as documented: ten messages, two replicas killed, all read back."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from scripts.cluster_demo import KILLED, TEXTS, run

pytestmark = pytest.mark.e2e


def test_the_demo_reads_all_ten_back_after_two_replicas_are_killed(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Each of msg1..msg10 is stored by one named replica, and with two SIGKILLed the facade reads all ten."""
    assert run(tmp_path)
    out = capsys.readouterr().out
    stored = re.findall(r'POST \{"msg": "(msg\d+)"\} +-> 200 .* stored by (logging\d)$', out, re.MULTILINE)
    assert [text for text, _ in stored] == list(TEXTS)
    assert re.search(r"GET /facade -> 200  served by (logging\d)", out)[1] not in KILLED  # type: ignore[index]
