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
