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
        ("vae", ["m1", "m2", "vae.safetensors"], 10)
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
