"""Synthetic libraries of fingerprints (no files): scan reports for testing and timing lineage at scale.

Fingerprints are linear in the weights (docs/fingerprint.md), so a family can be built directly in
fingerprint space: each model is its sampled values per tensor, stored through fp16 as a file would
be. A family is a random base; fine-tunes that drift from it by different amounts; weighted sums of
two or three fine-tunes; add-difference merges; block-weighted merges; light further fine-tunes of
merges; exact twins (`.ckpt` copies). Checkpoints carry their family's VAE, some a standalone VAE of
the library, and one per family a blend of two standalone VAEs. A second arch (other tensor names)
and unrelated models complete it. Seeded: the same arguments give the same reports. Each report
carries the generator's ground truth under `truth` (how the model was made; the core ignores it).
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

BLOCKS = [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)] + ["BASE"]
N = 4096  # elements per tensor: 64 samples each
K = 64


def _unet_names(arch: str) -> list[tuple[str, str]]:
    out = []
    for b in BLOCKS:
        stem = {"IN": "input_blocks", "OU": "output_blocks", "M0": "middle_block"}.get(b[:2], "time_embed")
        num = f".{int(b[-2:])}" if b[:2] in ("IN", "OU") else ""
        for j in range(2):
            out.append((f"{arch}.{stem}{num}.{j}.weight", b))
    return out


LAYOUTS = {
    arch: {
        "unet": _unet_names(arch),
        "clip_l": [(f"{arch}.text.{j}.weight", "BASE") for j in range(3)],
        "vae": [(f"decoder.{j}.weight", "BASE") for j in range(4)],
    }
    for arch in ("sd1", "sdx")
}


def _f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def _random(rng: np.random.Generator, arch: str) -> dict[str, np.ndarray]:
    return {c: _f16(rng.standard_normal(len(names) * K)) for c, names in LAYOUTS[arch].items()}


def _fingerprint(model: dict[str, np.ndarray], arch: str) -> dict[str, Any]:
    comps = {}
    for c, v in model.items():
        names = LAYOUTS[arch][c]
        order = sorted(range(len(names)), key=lambda i: names[i][0].encode())
        samples = np.concatenate([v[i * K : (i + 1) * K] for i in order]).astype("<f4")
        comps[c] = {
            "tensors": [{"name": names[i][0], "n": N, "block": names[i][1]} for i in order],
            "samples": base64.b64encode(samples.tobytes()).decode(),
        }
    return {"version": "fastscan.fingerprint/1", "components": comps}


def _block_of(arch: str) -> np.ndarray:
    return np.repeat([BLOCKS.index(b) for _, b in LAYOUTS[arch]["unet"]], K)


def library(n_models: int, seed: int = 0, family_size: int = 100) -> list[dict[str, Any]]:
    """About `n_models` scan reports (checkpoints and standalone VAEs) with fingerprints."""
    rng = np.random.default_rng(seed)
    reports: list[dict[str, Any]] = []

    def add(
        name: str, model: dict[str, np.ndarray], arch: str, kind: str = "checkpoint", truth: Any = None
    ) -> None:
        reports.append(
            {
                "path": f"/lib/{name}",
                "kind": kind,
                "arch": arch,
                "metadata": {},
                "fingerprint": _fingerprint(model, arch),
                # the generator's ground truth (the core ignores it): how the model was made
                "truth": truth,
            }
        )

    vaes = [_f16(rng.standard_normal(4 * K)) for _ in range(4)]
    for i, v in enumerate(vaes):
        add(f"vae{i}.safetensors", {"vae": v}, "sd1", "vae")
    fam = 0
    while len(reports) < n_models:
        arch = "sd1" if fam % 3 != 2 else "sdx"
        base = _random(rng, arch)
        members: list[dict[str, np.ndarray]] = []
        fts: list[dict[str, np.ndarray]] = []
        ft_paths: list[str] = []
        paths: list[str] = []

        def put(
            kind: str,
            m: dict[str, np.ndarray],
            truth: Any = None,
            fam: int = fam,
            arch: str = arch,
            members: list[dict[str, np.ndarray]] = members,
            paths: list[str] = paths,
        ) -> str:
            members.append(m)
            name = f"f{fam}/{kind}{len(members):03d}.safetensors"
            paths.append(f"/lib/{name}")
            add(name, m, arch, truth=truth)
            return paths[-1]

        put("base", base)
        size = min(family_size, n_models - len(reports))
        blocks = _block_of(arch)
        while len(members) < size:
            roll = rng.random()
            if roll < 0.3 or len(fts) < 3:
                drift = rng.uniform(0.05, 0.3)
                m = {
                    c: v if c == "vae" else _f16(v + drift * rng.standard_normal(v.size))
                    for c, v in base.items()
                }
                if rng.random() < 0.2:
                    m["vae"] = vaes[int(rng.integers(len(vaes)))]
                fts.append(m)
                ft_paths.append(put("ft", m))
            elif roll < 0.65:
                k = int(rng.integers(2, 4))
                pick = rng.choice(len(fts), size=k, replace=False)
                w = rng.dirichlet(np.ones(k))
                w = np.maximum(w, 0.1)
                w /= w.sum()
                put(
                    "mix",
                    {c: _f16(sum(wi * fts[p][c] for wi, p in zip(w, pick, strict=True))) for c in base},
                    {
                        "method": "weighted-sum",
                        "parents": {ft_paths[p]: float(wi) for wi, p in zip(w, pick, strict=True)},
                    },
                )
            elif roll < 0.75:
                a, b = rng.choice(len(fts), size=2, replace=False)
                f = rng.uniform(0.3, 1.0)
                put(
                    "add",
                    {c: _f16(fts[a][c] + f * (fts[b][c] - base[c])) for c in base},
                    {
                        "method": "add-difference",
                        "parents": {ft_paths[a]: 1.0, ft_paths[b]: f},
                        "base": paths[0],
                    },
                )
            elif roll < 0.82:
                a, b = rng.choice(len(fts), size=2, replace=False)
                wb = rng.uniform(0.1, 0.9, len(BLOCKS))
                m = {c: _f16(0.5 * fts[a][c] + 0.5 * fts[b][c]) for c in base}
                m["unet"] = _f16(wb[blocks] * fts[a]["unet"] + (1 - wb[blocks]) * fts[b]["unet"])
                put("block", m, {"method": "block-weighted", "parents": {ft_paths[a]: 0.5, ft_paths[b]: 0.5}})
            elif roll < 0.88:
                si = int(rng.integers(len(members)))
                src = members[si]
                put(
                    "light",
                    {
                        c: v if c == "vae" else _f16(v + 0.01 * rng.standard_normal(v.size))
                        for c, v in src.items()
                    },
                    {"method": "light", "of": paths[si]},
                )
            elif roll < 0.95:
                i = int(rng.integers(len(members)))
                members.append(members[i])
                paths.append(paths[i])
                add(
                    f"f{fam}/twin{len(members):03d}.ckpt",
                    members[i],
                    arch,
                    truth={"method": "twin", "of": paths[i]},
                )
            else:
                m = dict(base)
                m["vae"] = _f16(0.6 * vaes[0] + 0.4 * vaes[1])
                put("gray", m)
        fam += 1
        if len(reports) < n_models and fam % 4 == 0:
            add(f"other{fam}.safetensors", _random(rng, "sd1"), "sd1")
    return reports
