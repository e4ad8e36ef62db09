"""Every bash and python block in README.md runs as written, in order, in one empty folder.

Blocks that cannot run here are skipped by a marker they contain, each with its reason; a marker
that no longer matches a block fails the test, so the list cannot go stale.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

README = Path(__file__).parent.parent / "README.md"
BLOCK = re.compile(r"^```(bash|python)\n(.*?)^```", re.S | re.M)

#: marker -> why the block it is in does not run in the tests
SKIP = {
    'pip install -e . && mlcodec demo': "installs the package: CI runs exactly this as .ci/run",
    "mlcodec tune-codec --data": "fine-tunes the codec for minutes on a GPU (benchmarks/tuned_codec.py)",
    "scripts/fetch_photos.sh      #": "trains the packaged weights: hours on a CPU, a GPU for stages 2-3",
}


def blocks() -> list[tuple[str, str]]:
    return BLOCK.findall(README.read_text())


def test_every_skip_marker_names_one_block():
    for marker in SKIP:
        assert sum(marker in code for _, code in blocks()) == 1, marker


@pytest.mark.slow
def test_readme_blocks_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    env = {**os.environ, "YOLO_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    namespace: dict = {"__name__": "__readme__"}
    ran = 0
    for i, (lang, code) in enumerate(blocks()):
        if any(marker in code for marker in SKIP):
            continue
        t0 = time.perf_counter()
        if lang == "bash":
            res = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=tmp_path, env=env,
                                 capture_output=True, text=True, timeout=900)
            assert res.returncode == 0, f"block {i}:\n{code}\n--- stderr:\n{res.stderr[-3000:]}"
        else:
            exec(compile(code, f"README.md block {i}", "exec"), namespace)  # noqa: S102
        ran += 1
        with capsys.disabled():  # each block's seconds in every run's log: where the test's time goes
            print(f"\n  README block {i}: {time.perf_counter() - t0:.1f} s ({code.splitlines()[0][:50]})")
    assert ran == len(blocks()) - len(SKIP)
