"""The JSON report is the same text as when tests/golden/report-*.json were made (tests/golden_reports.py):
through the streaming scan, through the scan cache (a report read back from the database), and through
`scan_file` for each file."""

import json

import pytest

from fastscan import _core
from fastscan.model import FileReport
from golden_reports import CASES, case_root, golden_path, normalise, report_text


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("golden-report")


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_report_text_is_the_golden_one(name, workdir):
    assert report_text(name, workdir) + "\n" == golden_path(name).read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_report_served_from_the_cache_is_the_golden_one(name, workdir, tmp_path):
    db = tmp_path / "cache.sqlite3"
    first = report_text(name, workdir, cache=db)
    again = report_text(name, workdir, cache=db)
    assert first == again
    assert again + "\n" == golden_path(name).read_text()


@pytest.mark.parametrize("name", sorted(CASES))
def test_scan_file_gives_each_file_the_golden_object(name, workdir):
    root = case_root(name, workdir)
    _, opts = CASES[name]
    golden = json.loads(golden_path(name).read_text())
    assert golden["files"]
    for want in golden["files"]:
        path = want["path"].replace("$ROOT", str(root))
        got = FileReport.from_dict(_core.scan_file(path, **opts)).to_dict()
        assert normalise(json.dumps(got, indent=2), root) == json.dumps(want, indent=2), path
