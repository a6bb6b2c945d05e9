"""The fix commands `fix`, `convert`, `extract`, `bake-vae` as plain functions (the CLI: fastscan.cli.fix)."""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from fastscan import _core
from fastscan.advice import Remedy, remedy
from fastscan.fixes import plan as planning
from fastscan.fixes.backup import backup as make_backup
from fastscan.fixes.errors import FixError
from fastscan.fixes.source import Source
from fastscan.fixes.writer import Progress, write_verified
from fastscan.model import Format


@dataclass
class Result:
    """What a command did: the file written (None when nothing needed doing), what changed, the backup."""

    # The file written (an object's URL when written to object storage).
    out: Path | str | None
    actions: list[str] = field(default_factory=list)
    backup: Path | None = None
    # Error and critical findings no fix repairs (the file needs a new copy); a fix still does what it can.
    unrepairable: list[str] = field(default_factory=list)
    # Bytes the output is smaller than the input (negative: larger); None when nothing was planned.
    saved: int | None = None


class Unrepairable(FixError):
    """The file is too damaged to read, in ways no fix can undo: it needs a new copy."""


_SEVERITY = {"critical": 0, "error": 1}


def _beyond_repair(findings: list[dict]) -> list[str]:
    """The error and critical findings no fix repairs, as `check: message`, worst first (as a scan does)."""
    bad = [f for f in findings if f["severity"] in _SEVERITY and remedy(f["check"]) is not Remedy.fix]
    bad.sort(key=lambda f: (_SEVERITY[f["severity"]], f["check"]))
    return [f"{f['check']}: {f['message']}" for f in bad]


def unrepairable(path: Path) -> list[str]:
    """The file's error and critical findings no fix repairs, as `check: message` (data pass included).

    A whole scan of the file: only for a fix that reads no data (nothing to write, a dry run, a file it
    cannot open); a fix that writes gets the same answer from its own read (`_written_unrepairable`).
    """
    report = _core.scan_file(str(path), hash="components")
    out = [report["error"]["message"]] if report.get("error") else []
    return out + _beyond_repair(report.get("findings") or [])


def _written_unrepairable(src: Source, written: dict) -> list[str]:
    """`unrepairable` of a fixed file without a second read: its header-level findings, and the value
    checks the core's executor ran on the tensors it read (damage only in dropped tensors is gone)."""
    return _beyond_repair([*src.table["findings"], *written["source_findings"]])


def is_url(path: object) -> bool:
    """True when `path` names an object in object storage (s3://, gs://, az://, https://)."""
    return isinstance(path, str) and _core.is_url(path)


def _target(out: str | os.PathLike) -> Path | str:
    """Where a command writes: a local path, or an object's URL kept as text (a Path would mangle it)."""
    return out if is_url(out) else Path(out)


F = TypeVar("F", bound=Callable[..., Result])


def _objects(inputs: int) -> Callable[[F], F]:
    """Lets a command take object-store URLs as its first `inputs` arguments (and `endpoint_url=`): each
    object is copied into a temporary folder first (one streamed read pinned to its listed ETag) and the
    command runs on the copy; its messages name the URLs. The folder is removed after."""

    def wrap(command: F) -> F:
        @functools.wraps(command)
        def run(*args: Any, endpoint_url: str | None = None, **kw: Any) -> Result:
            urls = [a for a in args[:inputs] if is_url(a)]
            if not urls:
                return command(*args, endpoint_url=endpoint_url, **kw)
            if kw.get("in_place") and not kw.get("dry_run"):
                raise FixError(
                    f"{urls[0]}: an object is never replaced in place; write the fix to -o OUT "
                    "(a new object or a local file)"
                )
            with tempfile.TemporaryDirectory(prefix="fastscan-input-") as tmp:
                local: dict[str, str] = {}
                for i, url in enumerate(urls):
                    folder = Path(tmp) / str(i)
                    folder.mkdir()
                    try:
                        local[url] = _core.download(url, str(folder), endpoint_url=endpoint_url)
                    except OSError as e:
                        raise FixError(str(e)) from None

                def named(text: str) -> str:
                    for url, path in local.items():
                        text = text.replace(str(path), url)
                    return text

                args = tuple(local.get(a, a) if isinstance(a, str) else a for a in args)
                try:
                    res = command(*args, endpoint_url=endpoint_url, **kw)
                except FixError as e:
                    raise type(e)(named(str(e))) from None
                res.actions = [named(a) for a in res.actions]
                res.unrepairable = [named(u) for u in res.unrepairable]
                return res

        return run  # type: ignore[return-value]

    return wrap


def _existing(path: str | os.PathLike) -> Path:
    p = Path(path)
    if not p.exists():
        raise FixError(f"{p}: no such file")
    if not p.is_file():
        raise FixError(f"{p}: not a regular file")
    return p


def _distinct(out: Path | str, *inputs: Path) -> None:
    if isinstance(out, str):
        return  # a new object: never a local input (and never an existing object: the core refuses)
    for i in inputs:
        if out.exists() and os.path.samefile(out, i):
            raise FixError(
                f"{out}: is the input itself; write elsewhere (or fix with --in-place --backup DIR)"
            )


def _identified(src: Source, what: str, force: bool) -> None:
    """Refuses a destructive fix on a file the core identified below its confidence threshold."""
    ident = src.table.get("identification")
    if ident is None or ident["confident"] or force:
        return
    raise FixError(
        f"{src.path}: identified as {src.table['kind']} {src.table['arch']} with a score of "
        f"{ident['score']:.0%} ({ident['missing_count']} of {ident['of']} reference keys missing), below "
        f"the {ident['threshold']:.0%} a destructive fix needs; {what} could drop what fastscan did not "
        "recognise. Check the file (fastscan info), then re-run with --force if you are sure"
    )


@_objects(1)
def fix(
    file: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    clip: bool = False,
    prune: str | None = None,
    dtype: str | None = None,
    in_place: bool = False,
    backup: str | os.PathLike | None = None,
    force: bool = False,
    dry_run: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
) -> Result:
    """Repairs a safetensors file (position_ids, EMA/junk, dtypes); with no option, what the scan advises.

    The output keeps the input's permission bits; an `--in-place` backup also keeps its times (the core
    makes both). Damage no
    fix can repair (truncation, NaN values, a broken header) is listed in `Result.unrepairable`. With
    `dry_run`, plans and returns without writing. `progress(stage, done, total)` is called as the core
    writes and verifies the output. `file` and `out` may be object-store URLs (`endpoint_url`: an
    S3-compatible service): the output is then a new object, never one that exists.
    """
    src_path = _existing(file)
    if dry_run:
        pass
    elif in_place:
        src_path = src_path.resolve()  # replace the file a symlink points to, not the link
        if backup is None:
            raise FixError(
                "--in-place needs --backup DIR: the input is replaced only after a verified backup"
            )
        if out is not None:
            raise FixError("give either -o OUT or --in-place, not both")
    elif out is None:
        raise FixError("fix needs -o OUT (or --in-place --backup DIR)")
    elif backup is not None:
        raise FixError("--backup only goes with --in-place")
    try:
        source = Source(src_path)
    except FixError as e:
        if bad := unrepairable(src_path):
            raise Unrepairable(f"{e}; cannot be repaired ({'; '.join(bad)}): re-download it") from None
        raise
    with source as src:
        if src.table["format"] != Format.SAFETENSORS:
            raise FixError(f"{src_path}: is a {src.table['format']} file; run `fastscan convert` on it first")
        notes = []
        if not (clip or prune or dtype):
            opts = planning.recommend(src)
            asked = [
                n for n, on in (("--clip", opts["clip"]), (f"--prune {opts['prune']}", opts["prune"])) if on
            ]
            notes.append(
                "no option given: applying what the scan recommends"
                + (f" ({' '.join(asked)})" if asked else "")
            )
        else:
            opts = {"clip": clip, "prune": prune, "dtype": dtype}
        if opts["prune"]:
            _identified(src, f"pruning ({opts['prune']})", force)
        p = planning.plan_fix(src, **opts)
        if not p.changes_anything(src):
            return Result(
                None,
                [*notes, *p.actions, f"nothing to change in {src_path}; no file written"],
                unrepairable=unrepairable(src_path),
            )
        planning.record(p, "fix", src)
        st = os.stat(src_path)
        saved = st.st_size - p.output_size()
        if dry_run:
            return Result(None, [*notes, *p.actions], unrepairable=unrepairable(src_path), saved=saved)
        if in_place:
            kept = make_backup(src_path, Path(backup), overwrite=force)
            written = write_verified(p, [src], src_path, overwrite=True, progress=progress)
            bad = _written_unrepairable(src, written)
            return Result(src_path, [*notes, *p.actions], kept, bad, saved)
        out_path = _target(out)
        _distinct(out_path, src_path)
        written = write_verified(
            p,
            [src],
            out_path,
            overwrite=force,
            progress=progress,
            endpoint_url=endpoint_url,
            mode=st.st_mode & 0o7777,
        )
        bad = _written_unrepairable(src, written)
        return Result(out_path, [*notes, *p.actions], unrepairable=bad, saved=saved)


def default_output(file: str | os.PathLike) -> Path | str:
    """Where `convert` writes when not told: the input's name with `.safetensors` in its place (for an
    object, a new object beside it)."""
    if is_url(file):
        head, _, name = str(file).rpartition("/")
        stem = name.rsplit(".", 1)[0] if "." in name else name
        return f"{head}/{stem}.safetensors"
    return Path(file).with_suffix(".safetensors")


def convert(
    file: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    force: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
) -> Result:
    """Converts a pickle checkpoint to safetensors without executing it; records source hashes.

    `out` defaults to the input's name with `.safetensors`; the output keeps the input's permission bits.
    The core reads the checkpoint once: it hashes the whole file while copying its tensors.
    """
    if is_url(file) and out is None:
        out = default_output(file)
    return _convert(file, out, force=force, progress=progress, endpoint_url=endpoint_url)


@_objects(1)
def _convert(
    file: str | os.PathLike,
    out: str | os.PathLike | None,
    *,
    force: bool,
    progress: Progress | None,
    endpoint_url: str | None,
) -> Result:
    src_path = _existing(file)
    out_path = _target(out) if out is not None else default_output(src_path)
    _distinct(out_path, src_path)
    with Source(src_path) as src:
        p = planning.plan_convert(src)
        planning.record(p, "convert", src)
        for f in src.table["findings"]:
            if f["severity"] == "critical":
                p.actions.append(f"note: {f['message']} (never executed: only tensor data was copied)")
        mode = os.stat(src_path).st_mode & 0o7777
        write_verified(
            p, [src], out_path, overwrite=force, progress=progress, endpoint_url=endpoint_url, mode=mode
        )
        return Result(out_path, p.actions)


@_objects(1)
def extract(
    file: str | os.PathLike,
    component: str,
    out: str | os.PathLike,
    *,
    force: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
) -> Result:
    """Writes one component (vae, unet, text-encoder or an encoder name) alone under its canonical names."""
    src_path = _existing(file)
    out_path = _target(out)
    _distinct(out_path, src_path)
    with Source(src_path) as src:
        _identified(src, f"extracting {component}", force)
        p = planning.record(planning.plan_extract(src, component), "extract", src)
        write_verified(p, [src], out_path, overwrite=force, progress=progress, endpoint_url=endpoint_url)
        return Result(out_path, p.actions)


@_objects(2)
def bake_vae(
    ckpt: str | os.PathLike,
    vae: str | os.PathLike,
    out: str | os.PathLike,
    *,
    dtype: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
    endpoint_url: str | None = None,
) -> Result:
    """Writes the checkpoint with its VAE replaced by a standalone VAE's tensors (shapes must match)."""
    ckpt_path, vae_path = _existing(ckpt), _existing(vae)
    out_path = _target(out)
    _distinct(out_path, ckpt_path, vae_path)
    with Source(ckpt_path) as c, Source(vae_path) as v:
        if c.table["format"] != Format.SAFETENSORS:
            raise FixError(f"{ckpt_path}: is a {c.table['format']} file; run `fastscan convert` on it first")
        _identified(c, "replacing its VAE", force)
        p = planning.record(planning.plan_bake_vae(c, v, dtype), "bake-vae", c)
        write_verified(p, [c, v], out_path, overwrite=force, progress=progress, endpoint_url=endpoint_url)
        return Result(out_path, p.actions)
