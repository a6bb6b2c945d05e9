"""`fix`, `convert`, `extract` and `bake-vae`: option parsing, the plan, progress and the summary.

The work is in fastscan.fixes.commands (the writing in the core), imported when a command runs so
`fastscan --help` stays fast. `fix` and `convert` take files and folders: the plan comes first, then each
file with a byte progress bar on a terminal, then a summary; the exit code is the worst result (0 done,
1 a file needs a new copy or failed, 2 usage).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer

from fastscan.cli.choices import EndpointOpt, choice
from fastscan.cli.errors import EXIT_FINDINGS, EXIT_OK, fail, warn
from fastscan.cli.options import Component, Dtype, Prune
from fastscan.model import Arch, Format, Kind

OutOpt = Annotated[
    str | None,
    typer.Option(
        "-o", "--output", metavar="OUT", help="File to write (never the input), or a new object's URL."
    ),
]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Overwrite OUT if it exists; prune/extract/bake-vae also on a low-confidence identification.",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; write nothing.")]


def _console(stderr: bool = False) -> Any:
    from fastscan.render import stderr_console, stdout_console

    return stderr_console() if stderr else stdout_console()


@dataclass
class Outcome:
    """One file's result in a batch: its path, what was done or planned, and the exit code it calls for."""

    path: Path
    lines: list[str]
    code: int
    saved: int = 0


def _described(res: Any) -> list[tuple[str, str]]:
    """(style, line) of each line describing a fix's result: red what cannot be repaired, green what
    was written."""
    lines = [("", f"- {a}") for a in res.actions]
    for u in res.unrepairable:
        lines.append(("red", f"cannot repair {u}: re-download the file"))
    if res.backup is not None:
        lines.append(("green", f"backup {res.backup} (verified)"))
    if res.out is not None:
        lines.append(("green", f"wrote {res.out} (verified)"))
    return lines


def _call(name: str, *args: Any, **kw: Any) -> Any:
    """Runs the named function of fastscan.fixes.commands with a byte progress bar on a terminal (driven by
    the core's executor); exit 2 on FixError, 1 when the file needs a new copy."""
    from fastscan.fixes import commands
    from fastscan.fixes.errors import FixError

    try:
        with _bar(f"{name.replace('_', '-')} {args[0]}") as progress:
            return getattr(commands, name)(*args, **kw, progress=progress)
    except commands.Unrepairable as e:
        raise fail(str(e), EXIT_FINDINGS) from None
    except FixError as e:
        raise fail(str(e)) from None


class _bar:
    """A transient byte progress bar on stderr, only on a terminal: the core calls the yielded function
    with (stage, done, total) as it writes, then as it verifies, the output."""

    def __init__(self, label: str) -> None:
        self.label, self.bar, self.task, self.stage = label, None, None, None

    def __enter__(self) -> Any:
        if not sys.stderr.isatty():
            return None
        from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

        from fastscan.terminal import markup

        self.bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TimeRemainingColumn(),
            console=_console(stderr=True),
            transient=True,
        )
        self.bar.__enter__()
        self.task = self.bar.add_task(markup(self.label), total=None)
        return self.update

    def update(self, stage: str, done: int, total: int) -> None:
        """Shows `done` of `total` bytes of `stage` (write, then verify)."""
        if stage != self.stage:
            from fastscan.terminal import markup

            self.stage = stage
            word = "writing" if stage == "write" else "verifying"
            self.bar.update(self.task, description=f"{markup(self.label)}: {word}", completed=0)
        self.bar.update(self.task, completed=done, total=max(total, 1))

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


def _print_result(res: Any) -> int:
    from fastscan.terminal import markup

    con = _console()
    for style, line in _described(res):
        con.print(f"  [{style}]{markup(line)}[/]" if style else f"  {markup(line)}", highlight=False)
    return EXIT_FINDINGS if res.unrepairable else EXIT_OK


def _is_url(p: str) -> bool:
    from fastscan.fixes.commands import is_url

    return is_url(p)


def _expand(paths: list[str], formats: tuple[Format, ...], endpoint_url: str | None = None) -> list[str]:
    """The files under `paths` (files as given, folders walked, prefixes listed) whose format is in
    `formats`."""
    from fastscan.api import scan

    report = scan(paths, hash="none", endpoint_url=endpoint_url)
    return [f.path for f in report.files if f.error is None and f.format in formats]


def _is_dir(p: str) -> bool:
    """A folder, or an object-store prefix (a URL ending in `/`)."""
    from fastscan.fixes.commands import is_url

    return p.endswith("/") if is_url(p) else Path(p).is_dir()


def fix(
    paths: Annotated[
        list[str],
        typer.Argument(help="safetensors files or folders to repair (or an object's URL).", metavar="PATH"),
    ],
    output: OutOpt = None,
    clip: Annotated[bool, typer.Option("--clip", help="Reset position_ids to int64 0..n-1.")] = False,
    prune: Annotated[
        Prune | None, choice(Prune, "--prune", help="Drop EMA weights, junk keys, or both.")
    ] = None,
    dtype: Annotated[Dtype | None, choice(Dtype, "--dtype", help="Cast floating-point tensors.")] = None,
    in_place: Annotated[bool, typer.Option("--in-place", help="Replace each file (needs --backup).")] = False,
    backup: Annotated[
        Path | None,
        typer.Option("--backup", metavar="DIR", help="Folder for verified backups (implies --in-place)."),
    ] = None,
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Repair models: CLIP position_ids, EMA/junk keys, precision. No option: what the scan advises.

    One file: `-o OUT`, or `--backup DIR` to replace it. Several files or folders: each is replaced after a
    verified backup into DIR. `--dry-run` prints the plan only. PATH and OUT may be object-store URLs
    (s3://...): the output is then a new object, never one that exists.
    """
    opts = {"clip": clip, "prune": prune.value if prune else None, "dtype": dtype.value if dtype else None}
    single = len(paths) == 1 and not _is_dir(paths[0])
    if single and not dry_run and not (backup is not None or in_place):
        res = _call("fix", paths[0], output, **opts, force=force, endpoint_url=endpoint_url)
        raise typer.Exit(_print_result(res))
    if output is not None and not single:
        raise fail("-o OUT takes one file; several files are fixed in place with --backup DIR")
    if not dry_run and backup is None:
        raise fail("fixing in place needs --backup DIR: each file is replaced only after a verified backup")
    files = [paths[0]] if single else _expand(paths, (Format.SAFETENSORS,), endpoint_url)
    if not dry_run and (urls := [f for f in files if _is_url(f)]):
        raise fail(
            f"{urls[0]}: objects are never fixed in place; fix one object to a new one with -o OUT "
            "(--dry-run plans a whole prefix)"
        )
    raise typer.Exit(_batch(files, opts, backup, dry_run, force, endpoint_url))


def _batch(
    files: list[str], opts: dict, backup: Path | None, dry_run: bool, force: bool, endpoint_url: str | None
) -> int:
    """Plans every file, prints the plan, then (unless a dry run) fixes each with a progress bar."""
    from fastscan.fixes import commands
    from fastscan.fixes.errors import FixError
    from fastscan.render import bytes_bar, size
    from fastscan.terminal import markup

    con = _console()
    plans: list[tuple[str, Any]] = []
    worst = EXIT_OK
    con.print(f"[bold]Plan[/] ({len(files)} file(s))", highlight=False)
    for p in files:
        try:
            res = commands.fix(p, **opts, dry_run=True, endpoint_url=endpoint_url)
        except FixError as e:
            con.print(f"[red]{markup(str(p))}[/]: {markup(str(e))}", highlight=False)
            worst = max(worst, EXIT_FINDINGS)
            continue
        gets = "; ".join(a for a in res.actions) or "nothing"
        if res.saved is None:
            con.print(f"  {markup(str(p))}: nothing to change", highlight=False)
        else:
            con.print(f"  {markup(str(p))}: {markup(gets)} (saves {size(res.saved)})", highlight=False)
            plans.append((p, res))
        for u in res.unrepairable:
            con.print(f"    [red]cannot repair {markup(u)}: re-download the file[/]", highlight=False)
            worst = max(worst, EXIT_FINDINGS)
    total_saved = sum(r.saved or 0 for _, r in plans)
    con.print(f"{len(plans)} file(s) to fix, saving {size(total_saved)}", highlight=False)
    if dry_run or not plans:
        return worst
    total = sum(Path(p).stat().st_size for p, _ in plans)
    done = fixed = 0
    failures: list[str] = []
    with bytes_bar(_console(stderr=True), "fixing", total) if sys.stderr.isatty() else _null_bar() as update:
        for p, _ in plans:
            try:
                commands.fix(p, **opts, in_place=True, backup=backup, force=force)
                fixed += 1
            except FixError as e:
                failures.append(str(e))
            done += Path(p).stat().st_size
            update(done)
    for f in failures:
        con.print(f"[red]failed[/]: {markup(f)}", highlight=False)
    con.print(f"fixed {fixed} of {len(plans)} file(s); backups in {markup(str(backup))}", highlight=False)
    return max(worst, EXIT_FINDINGS if failures else EXIT_OK)


class _null_bar:
    def __enter__(self) -> Any:
        return lambda done: None

    def __exit__(self, *exc: Any) -> None:
        return None


def convert(
    paths: Annotated[
        list[str],
        typer.Argument(help="pickle checkpoints (.ckpt, .pt, .pth, .bin) or folders.", metavar="PATH"),
    ],
    output: OutOpt = None,
    dry_run: DryRunOpt = False,
    force: ForceOpt = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Convert pickle checkpoints to safetensors, never running them.

    OUT defaults to the input's name with `.safetensors`; a folder converts every pickle checkpoint in it.
    """
    from fastscan.fixes import commands
    from fastscan.fixes.errors import FixError

    single = len(paths) == 1 and not _is_dir(paths[0])
    if single and not dry_run:
        res = _call("convert", paths[0], output, force=force, endpoint_url=endpoint_url)
        raise typer.Exit(_print_result(res))
    if output is not None:
        raise fail("-o OUT takes one file; in folder mode each NAME.ckpt becomes NAME.safetensors beside it")
    formats = (Format.PICKLE, Format.TORCH_ZIP, Format.TORCH_LEGACY)
    files = [paths[0]] if single else _expand(paths, formats, endpoint_url)
    con = _console()
    todo = []
    for p in files:
        out = commands.default_output(p)
        skip = isinstance(out, Path) and out.exists() and not force
        con.print(
            f"  {p} -> {out}" + (" (exists: skipped; --force overwrites)" if skip else ""), highlight=False
        )
        if not skip:
            todo.append((p, out))
    if dry_run:
        raise typer.Exit(EXIT_OK)
    failures = 0
    for p, out in todo:
        try:
            with _bar(f"convert {p}") as progress:
                commands.convert(p, out, force=force, progress=progress, endpoint_url=endpoint_url)
            con.print(f"  [green]wrote[/] {out} (verified)", highlight=False)
        except FixError as e:
            failures += 1
            con.print(f"  [red]failed[/]: {e}", highlight=False)
    con.print(f"converted {len(todo) - failures} of {len(todo)} file(s)", highlight=False)
    raise typer.Exit(EXIT_FINDINGS if failures else EXIT_OK)


def extract(
    file: Annotated[str, typer.Argument(help="A model file (or an object's URL).", metavar="FILE")],
    component: Annotated[Component, choice(Component, "--component", help="The component to write alone.")],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="OUT", help="File to write, or a new object's URL.")
    ],
    force: ForceOpt = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Write one component alone, under its standalone names."""
    kw = {"force": force, "endpoint_url": endpoint_url}
    raise typer.Exit(_print_result(_call("extract", file, component.value, output, **kw)))


def bake_vae(
    ckpt: Annotated[str, typer.Argument(help="A checkpoint (or an object's URL).", metavar="CKPT")],
    vae: Annotated[str, typer.Option("--vae", metavar="VAE", help="A standalone VAE file (or URL).")],
    output: Annotated[
        str, typer.Option("-o", "--output", metavar="OUT", help="File to write, or a new object's URL.")
    ],
    dtype: Annotated[
        Dtype | None, choice(Dtype, "--dtype", help="Cast the output's floating-point tensors.")
    ] = None,
    force: ForceOpt = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Replace a checkpoint's VAE with a standalone one.

    Every shape is checked; a VAE of another architecture than the checkpoint gets a warning.
    """
    _warn_arch(ckpt, vae, endpoint_url)
    kw = {"dtype": dtype.value if dtype else None, "force": force, "endpoint_url": endpoint_url}
    raise typer.Exit(_print_result(_call("bake_vae", ckpt, vae, output, **kw)))


def _warn_arch(ckpt: str, vae: str, endpoint_url: str | None) -> None:
    """Warns when the core places the VAE file in another architecture than the checkpoint."""
    from fastscan.api import scan_one

    try:
        c = scan_one(ckpt, hash="none", endpoint_url=endpoint_url)
        v = scan_one(vae, hash="none", endpoint_url=endpoint_url)
    except (OSError, ValueError):
        return  # the command itself reports missing files
    if v.kind != Kind.VAE:
        warn(f"{vae} is a {v.kind} file, not a standalone VAE")
    elif Arch.UNKNOWN not in (c.arch, v.arch) and c.arch != v.arch:
        warn(f"{vae} is a VAE of {v.arch} and {ckpt} is {c.arch}: the images will come out wrong")
    else:
        # SD1 and SDXL VAEs have the same shapes; their weights tell them apart (trained apart, unrelated)
        from fastscan import _core
        from fastscan.lineage import vae_similarity

        try:
            sim = vae_similarity(ckpt, vae, endpoint_url=endpoint_url)
        except (OSError, ValueError):
            return
        if sim is not None and sim < _core.LINEAGE_FAMILY_MIN:
            warn(
                f"{vae} is unrelated to the VAE of {ckpt} (weights similarity {sim:.2f}): most likely a VAE "
                "of another architecture (an SDXL VAE in an SD1 checkpoint, or the reverse); "
                "the images will come out wrong"
            )
