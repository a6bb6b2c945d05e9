"""Every fix writes the same bytes as when tests/golden/fixes.json was made (see tests/golden_fixes.py)."""

import json

import pytest

from golden_fixes import CASES, GOLDEN, run_case

EXPECTED = json.loads(GOLDEN.read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden")


def test_the_golden_file_lists_every_case():
    assert sorted(EXPECTED["blake3"]) == sorted(CASES)
    assert EXPECTED["cases"] == json.loads(json.dumps(CASES))


@pytest.mark.parametrize("name", sorted(CASES))
def test_fix_output_is_bit_identical_to_the_golden_one(name, workdir):
    assert run_case(name, workdir) == EXPECTED["blake3"][name]
