"""Grouping logic of fastscan.dedupe on report file objects (hash values are arbitrary labels here)."""

from fastscan.dedupe import find_duplicates


def _file(path, blake3, size=100, **components):
    comps = {
        name: {"bytes": b, "blake3": h, "tensors": 1, "dtypes": {}} for name, (h, b) in components.items()
    }
    return {"path": path, "size": size, "hashes": {"blake3": blake3}, "components": comps, "error": None}


def test_identical_files_grouped_once_with_reclaimable_bytes():
    fs = [_file("a", "x", 10), _file("b", "x", 10), _file("c", "x", 10), _file("d", "y", 10)]
    groups = find_duplicates(fs)
    ident = [g for g in groups if g["type"] == "identical-files"]
    assert len(ident) == 1
    assert ident[0]["files"] == ["a", "b", "c"]
    assert ident[0]["reclaimable"] == 20


def test_shared_vae_across_different_checkpoints():
    fs = [
        _file("m1", "f1", unet=("u1", 50), vae=("v", 5)),
        _file("m2", "f2", unet=("u2", 50), vae=("v", 5)),
        _file("vae.safetensors", "f3", vae=("v", 5)),
        _file("m3", "f4", unet=("u3", 50), vae=("other", 5)),
    ]
    groups = find_duplicates(fs)
    shared = [g for g in groups if g["type"] == "shared-component"]
    assert [(g["component"], g["files"], g["reclaimable"]) for g in shared] == [
        ("vae", ["m1", "m2", "vae.safetensors"], 0)  # deleting files cannot free a component they share
    ]
    assert not [g for g in groups if g["type"] in ("identical-files", "same-weights")]


def test_same_weights_different_packaging_not_repeated_per_component():
    fs = [
        _file("a.safetensors", "f1", 120, unet=("u", 50), vae=("v", 5), buffers=(None, 3)),
        _file("a.ckpt", "f2", 130, unet=("u", 50), vae=("v", 5)),
    ]
    groups = find_duplicates(fs)
    assert [g["type"] for g in groups] == ["same-weights"]
    assert groups[0]["reclaimable"] == 55


def test_unhashed_and_failed_files_are_ignored():
    failed = dict(_file("c", "z"), error={"kind": "io"})
    fs = [_file("a", None, unet=("u", 5)), _file("b", None, unet=(None, 5)), failed]
    assert find_duplicates(fs) == []


def _finding(severity):
    return {"check": "file.truncated", "severity": severity, "message": "", "details": None}


def test_a_damaged_file_is_never_same_weights_and_never_kept_over_a_healthy_copy():
    # b has the same weight hashes as a but an error finding: not the same weights as a healthy a.
    a = dict(_file("a", "f1", 100, unet=("u", 50)), mtime=2.0)
    b = dict(_file("b", "f2", 100, unet=("u", 50)), mtime=1.0, findings=[_finding("error")])
    assert find_duplicates([a, b]) == []
    # Byte-identical copies: the oldest is kept unless it is damaged, whatever the rule says.
    c = dict(_file("c", "x", 10), mtime=1.0, findings=[_finding("critical")])
    d = dict(_file("d", "x", 10), mtime=3.0)
    e = dict(_file("e", "x", 10), mtime=2.0)
    (g,) = find_duplicates([c, d, e])
    assert (g["keep"], g["damaged"], g["reclaimable"]) == ("e", ["c"], 20)
    assert find_duplicates([c, d, e], keep="newest")[0]["keep"] == "d"
    assert find_duplicates([c, d, e], keep="path:d")[0]["keep"] == "d"
    assert find_duplicates([c, d, e], keep="path:c")[0]["keep"] == "e"  # c is damaged: a healthy copy wins


def test_the_scan_reports_duplicates_as_dedupe_does(tmp_path):
    """The scan's `duplicates` keep the oldest healthy copy (docs/report-schema.md), and component hashes
    alone (`--hash components`) already group the same weights."""
    import os

    import fastscan
    from fastscan import synth

    lay = synth.load_layout("vae-sd")["tensors"]
    for name, when in (("a", 2_000_000_000), ("b", 1_000_000_000), ("c", 1_500_000_000)):
        synth.write_safetensors(tmp_path / f"{name}.safetensors", lay)
        os.utime(tmp_path / f"{name}.safetensors", (when, when))
    # c: the same weights with other metadata (not an identical file)
    synth.write_safetensors(tmp_path / "c.safetensors", lay, metadata={"note": "re-saved"})
    os.utime(tmp_path / "c.safetensors", (1_500_000_000, 1_500_000_000))

    full = fastscan.scan(tmp_path, hash="full", cache=False).duplicates
    ident = [g for g in full if g["type"] == "identical-files"]
    assert [(g["files"], g["keep"]) for g in ident] == [
        ([str(tmp_path / "a.safetensors"), str(tmp_path / "b.safetensors")], str(tmp_path / "b.safetensors"))
    ]
    comps = fastscan.scan(tmp_path, hash="components", cache=False).duplicates
    assert [g["type"] for g in comps] == ["same-weights"]
    assert comps[0]["keep"] == str(tmp_path / "b.safetensors")
    assert not [g for g in comps if g["type"] == "identical-files"]
