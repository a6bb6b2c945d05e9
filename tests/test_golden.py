"""Every fix writes the same bytes as when tests/golden/fixes.json was made (see tests/golden_fixes.py)."""

import json
import struct

import pytest
from safetensors import safe_open

from golden_fixes import CASES, GOLDEN, run_case

EXPECTED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


def test_the_golden_file_lists_every_case():
    assert sorted(EXPECTED["blake3"]) == sorted(CASES)
    assert EXPECTED["cases"] == json.loads(json.dumps(CASES))


def reference_loads(path):
    """The reference `safetensors` package opens the file and lists every tensor of its header."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        names = set(json.loads(f.read(n))) - {"__metadata__"}
    with safe_open(str(path), "numpy") as st:
        assert set(st.keys()) == names


@pytest.mark.parametrize("name", sorted(CASES))
def test_fix_output_is_bit_identical_to_the_golden_one_and_loads_with_the_reference(name, workdir):
    assert run_case(name, workdir, check=reference_loads) == EXPECTED["blake3"][name]
