"""Generation through the Python API on a trained tiny model: seeds, streaming, script mode."""

from __future__ import annotations

from pathlib import Path

import pytest

from gptscratch import api
from gptscratch.errors import UserError
from gptscratch.generation.script import script_format


def test_same_seed_same_text_and_stream_equals_generate(tiny_run: Path) -> None:
    a = api.generate(tiny_run, "ROMEO:", max_new_tokens=40, seed=3, temperature=1.0)
    b = "".join(api.stream(tiny_run, "ROMEO:", max_new_tokens=40, seed=3, temperature=1.0))
    c = api.generate(tiny_run, "ROMEO:", max_new_tokens=40, seed=4, temperature=1.0)
    assert a == b and len(a) == 40
    assert a != c


def test_api_script_mode_on_a_trained_model(tiny_run: Path) -> None:
    script = script_format(api.load(tiny_run).checkpoint)
    assert script is not None and script.style == "line"
    assert {"First Citizen", "MENENIUS"} <= set(script.speakers)
    done = api.complete(tiny_run, "\n", speaker="menenius", until_next_speaker=True,
                        max_new_tokens=150, seed=0, temperature=1.0, num_samples=3)
    assert len(done) == 3
    for c in done:
        assert c.prompt == "MENENIUS:\n"
        assert all(not line.endswith(":") or line.rstrip(":") not in script.speakers
                   for line in c.text.splitlines())
        assert c.finish_reason in ("stop", "length")
    cached = Path(api.load(tiny_run).checkpoint.meta["data_dir"]) / "script.json"
    assert cached.exists()
    with pytest.raises(UserError, match="MENENIUS"):
        api.generate(tiny_run, "\n", speaker="Hamlet")
