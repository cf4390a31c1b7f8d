"""docs/plugins.md cannot rot: its example plugins are the packages in tests/plugins, and its testing example
runs and prints exactly the sample output the page shows.

``voxpipe-echo`` (an LLM) and ``voxpipe-chime`` (a TTS) were written from the page alone, as a new plugin
author would; the testing example drives both through whole simulated calls, a browser one and a mu-law
phone one, with voxpipe's offline STT.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGE = (ROOT / "docs" / "plugins.md").read_text(encoding="utf-8")
EXAMPLES = [ROOT / "tests" / "plugins" / name for name in ("voxpipe-echo", "voxpipe-chime")]
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", PAGE, flags=re.DOTALL)


def python_blocks() -> list[str]:
    return [code for language, code in BLOCKS if language == "python"]


@pytest.mark.parametrize("module", ["plugin.py", "service.py"])
@pytest.mark.parametrize("package", EXAMPLES, ids=lambda path: path.name)
def test_the_page_shows_the_example_plugins_as_they_are(package: Path, module: str) -> None:
    (source,) = package.glob(f"voxpipe_*/{module}")
    assert source.read_text(encoding="utf-8") in python_blocks(), f"docs/plugins.md differs from {source}"


def test_the_testing_example_prints_the_sample_output(tmp_path: Path) -> None:
    (example,) = [code for code in python_blocks() if code.startswith("# test_my_plugins.py")]
    (sample,) = [code for language, code in BLOCKS if language == "console" and "test_my_plugins.py" in code]
    script = tmp_path / "test_my_plugins.py"
    script.write_text(example, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, EXAMPLES))}

    ran = subprocess.run(  # noqa: S603 — this interpreter, on the test's own script
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300, cwd=tmp_path, env=env
    )

    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout == sample.split("\n", 1)[1]
