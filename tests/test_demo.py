"""`fastscan demo`: writes its library from the real layouts, scans it, and each file fires its checks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from fastscan import demo


def run_demo(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "fastscan", "demo", *map(str, args)],
        capture_output=True, text=True, cwd=cwd, env=env, timeout=300,
    )  # fmt: skip


@pytest.fixture(scope="module")
def demo_report(tmp_path_factory) -> tuple[Path, dict]:
    d = tmp_path_factory.mktemp("demo") / "lib"
    r = run_demo(d, "--json")
    assert r.returncode == 0, r.stderr
    return d, json.loads(r.stdout)


def _checks(rep: dict) -> dict[str, set[str]]:
    return {os.path.basename(f["path"]): {x["check"] for x in f["findings"]} for f in rep["files"]}


def test_demo_writes_every_file_and_a_readme(demo_report):
    d, rep = demo_report
    names = {f.name for f in demo.FILES}
    assert names | {"README.txt"} == {p.name for p in d.iterdir()}
    readme = (d / "README.txt").read_text()
    assert all(n in readme for n in names)
    assert rep["summary"]["files"] == len(names) + 1


def test_demo_files_are_sparse(demo_report):
    d, _ = demo_report
    apparent = sum(p.stat().st_size for p in d.iterdir())
    on_disk = sum(p.stat().st_blocks * 512 for p in d.iterdir())
    assert apparent > 20e9 and on_disk < 200e6


@pytest.mark.parametrize("f", demo.FILES, ids=lambda f: f.name)
def test_each_demo_file_fires_its_checks(f, demo_report):
    _, rep = demo_report
    got = _checks(rep)[f.name]
    want = demo.expected_checks("none")[f.name]
    assert want <= got, f.problem
    if not f.checks:
        assert not got, f"{f.name} should be clean"


def test_demo_data_pass_checks(demo_report, tmp_path):
    _, rep = demo_report
    got = _checks(rep)
    assert "clip.position-ids" in got["clip-position-ids-drifted-sd15.safetensors"]
    nan = demo_report[0] / "nan-values-embedding.safetensors"
    r = subprocess.run(
        [sys.executable, "-m", "fastscan", str(nan), "--json", "--hash", "components", "--no-cache"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "values.nan-inf" in _checks(json.loads(r.stdout))[nan.name]


def test_demo_clip_severities_follow_their_effect(demo_report):
    _, rep = demo_report
    clip = "clip.position-ids"
    sev = {
        os.path.basename(f["path"]): {x["severity"] for x in f["findings"] if x["check"] == clip}
        for f in rep["files"]
    }
    assert sev["sdxl-finetune-f16-position-ids.safetensors"] == {"info"}
    assert sev["clip-position-ids-offset-only-sd15.safetensors"] == {"warning"}
    assert sev["clip-position-ids-drifted-sd15.safetensors"] == {"error"}
    fine = next(f for f in rep["files"] if f["path"].endswith("sdxl-finetune-f16-position-ids.safetensors"))
    assert {x["severity"] for x in fine["findings"]} == {"info"}


def test_demo_zeroed_block_with_the_data_pass(demo_report):
    d, _ = demo_report
    p = d / "zeroed-block-merge-sd15.safetensors"
    r = subprocess.run(
        [sys.executable, "-m", "fastscan", str(p), "--json", "--hash", "components", "--no-cache"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    [f] = [x for x in json.loads(r.stdout)["files"][0]["findings"] if x["check"] == "values.constant"]
    assert [b["block"] for b in f["details"]["blocks"]] == ["output_blocks.4"]
    assert f["details"]["count"] == 0


def test_demo_kinds(demo_report):
    _, rep = demo_report
    kind = {os.path.basename(f["path"]): (f["kind"], f["arch"]) for f in rep["files"]}
    assert kind["clean-sd15.safetensors"] == ("checkpoint", "sd1")
    assert kind["clean-sdxl.safetensors"] == ("checkpoint", "sdxl")
    assert kind["clean-vae.safetensors"] == kind["duplicate-vae-renamed.safetensors"] == ("vae", "unknown")
    assert kind["clean-lora.safetensors"] == ("lora", "sd1")
    assert kind["clean-embedding.safetensors"] == ("embedding", "sd1")
    assert kind["sd3-medium-no-text-encoders.safetensors"] == ("checkpoint", "sd3")
    # The diffusers folder is one entry; none of its files is reported on its own.
    assert kind["clean-sd15-diffusers"] == ("checkpoint", "sd1")
    assert not [f for f in rep["files"] if "/clean-sd15-diffusers/" in f["path"]]
    merged = next(f for f in rep["files"] if f["path"].endswith("merged-sd15-with-recipe.safetensors"))
    assert merged["provenance"]["merge"]["method"] == "Weighted sum"


def test_duplicate_vae_has_the_same_bytes(demo_report):
    d, _ = demo_report
    assert (d / "clean-vae.safetensors").read_bytes() == (
        d / "duplicate-vae-renamed.safetensors"
    ).read_bytes()


def test_demo_tables_and_default_directory(tmp_path):
    r = run_demo(cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "demo-library" / "clean-sd15.safetensors").is_file()
    for word in ("junk.ema", "file.truncated", "header.invalid", "text-encoder.missing", "Problems"):
        assert word in r.stdout


def test_packed_layouts_equal_the_shared_layouts():
    from fastscan import synth

    packed = demo.packed_layouts()
    assert set(packed) == demo.LAYOUTS_USED
    for name, tensors in packed.items():
        assert tensors == synth.load_layout(name)["tensors"], name


def test_demo_runs_from_an_installed_package_far_from_the_layouts(tmp_path):
    # The package alone, as a wheel installs it (no shared/data/layouts above it, none in the cwd).
    site = tmp_path / "site"
    shutil.copytree(
        Path(demo.__file__).parent, site / "fastscan", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k != "FASTSCAN_LAYOUTS"}
    env["PYTHONPATH"] = str(site)
    work = tmp_path / "elsewhere"
    work.mkdir()
    r = run_demo("lib", "--json", cwd=work, env=env)
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["summary"]["files"] == len(demo.FILES) + 1  # and README.txt
    assert all(p.startswith("lib") for p in (f["path"] for f in rep["files"]))


def test_demo_refuses_a_folder_it_did_not_make(tmp_path):
    lib = tmp_path / "mine"
    lib.mkdir()
    (lib / "clean-sd15.safetensors").write_bytes(b"my own model")
    r = run_demo(lib)
    assert r.returncode == 2 and "not made by `fastscan demo`" in r.stderr and "--force" in r.stderr
    assert (lib / "clean-sd15.safetensors").read_bytes() == b"my own model"
    assert run_demo(lib, "--force", "--json").returncode == 0
    assert (lib / "clean-sd15.safetensors").stat().st_size > 1e9
    assert run_demo(lib, "--json").returncode == 0  # now it is the demo's folder: written again


def test_sparse_probe(tmp_path):
    assert demo.supports_sparse_files(tmp_path)  # tmp is ext4/tmpfs here
    assert list(tmp_path.iterdir()) == []  # the probe cleans up
