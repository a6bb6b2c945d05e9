"""The extension loads and classifies a real layout (sd15.json) written as a sparse file."""

from fastscan import _core, synth


def test_sd15_layout_is_an_sd1_checkpoint(tmp_path):
    p = synth.write_layout(tmp_path / "m.safetensors", "sd15")
    r = _core.scan_file(str(p), hash="none")
    assert (r["format"], r["kind"], r["arch"]) == ("safetensors", "checkpoint", "sd1")
    assert r["tensors"] == 1131
