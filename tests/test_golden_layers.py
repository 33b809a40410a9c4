"""Every ../shared/golden/layers case (computed by BVLC Caffe) through our Net, float32, golden tolerance."""
import pytest

from conftest import GOLDEN
from layer_harness import run_golden_case

CASES = sorted(p.name for p in (GOLDEN / "layers").iterdir() if p.is_dir()) if (GOLDEN / "layers").is_dir() else []


@pytest.mark.parametrize("case", CASES)
def test_golden_layer_case(case):
    failures = run_golden_case(str(GOLDEN / "layers" / case))
    assert not failures, "\n".join(failures)


def test_golden_layers_present(golden):
    assert len(CASES) >= 80
