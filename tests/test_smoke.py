"""The extension loads and classifies a real layout (sd15.json) written as a sparse file."""

from fastscan import _core, synth


def test_sd15_layout_is_an_sd1_checkpoint(tmp_path):
    p = synth.write_layout(tmp_path / "m.safetensors", "sd15")
    r = _core.scan_file(str(p), hash="none")
    assert (r["format"], r["kind"], r["arch"]) == ("safetensors", "checkpoint", "sd1")
    assert r["tensors"] == 1131


def test_position_ids_bytes_in_every_dtype_round_trip():
    import numpy as np

    for dtype, np_dtype in [("I64", "<i8"), ("I32", "<i4"), ("F16", "<f2"), ("F32", "<f4"), ("F64", "<f8")]:
        assert np.frombuffer(synth.position_ids_bytes(dtype), np_dtype).tolist() == list(range(77))
    bf16 = np.frombuffer(synth.position_ids_bytes("BF16"), "<u2").astype("<u4") << 16
    assert bf16.view("<f4").tolist() == list(range(77))  # 0..76 are exact in bfloat16
