"""Every README code block marked `<!-- runnable -->` runs as written (bash with the installed
`distcaffe` on PATH, python with this interpreter), from the repository root."""
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

BLOCK = re.compile(r"<!-- runnable -->\s*\n```(bash|python)\n(.*?)```", re.S)
BLOCKS = BLOCK.findall((ROOT / "README.md").read_text())


def test_readme_has_runnable_blocks():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("lang,code", BLOCKS, ids=["%s-%d" % (b[0], i) for i, b in enumerate(BLOCKS)])
def test_readme_block_runs(lang, code):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
    cmd = ["bash", "-euo", "pipefail", "-c", code] if lang == "bash" else [sys.executable, "-c", code]
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, "block failed:\n%s\nstdout:\n%s\nstderr:\n%s" % (code, r.stdout, r.stderr[-3000:])
