"""`fastscan dedupe PATH...`: show duplicate groups; with `--action`, replace redundant identical copies.

Grouping lives in fastscan.dedupe. Actions touch only byte-identical copies (`identical-files` groups),
compare each copy with the kept one byte for byte just before acting, never remove the last copy, never
keep a damaged copy over a healthy one, and are a dry run unless `--apply` is given.
"""

from __future__ import annotations

import errno
import filecmp
import json
import os
from typing import Annotated, Any

import typer

from fastscan.cli.choices import EndpointOpt, JobsOpt, NoCacheOpt, choice
from fastscan.cli.errors import EXIT_FINDINGS, EXIT_OK, closed_pipe, fail
from fastscan.cli.options import DedupeAction, bounded_jobs

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


def _keep_rule(value: str) -> str:
    if value in ("newest", "oldest") or (value.startswith("path:") and len(value) > len("path:")):
        return value
    raise typer.BadParameter(f"{value!r} is not a rule; use newest, oldest or path:PREFIX")


def command(
    paths: Annotated[list[str], typer.Argument(help="Files and directories to compare.", metavar="PATH")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the groups as JSON.")] = False,
    action: Annotated[
        DedupeAction,
        choice(DedupeAction, "--action", help="What to do with redundant identical copies."),
    ] = DedupeAction.report,
    keep: Annotated[
        str,
        typer.Option(
            "--keep",
            metavar="newest|oldest|path:PREFIX",
            parser=_keep_rule,
            help="Which copy of a group stays (a healthy copy always wins over a damaged one).",
        ),
    ] = "oldest",
    dry_run: Annotated[
        bool, typer.Option("--dry-run/--apply", help="Say what the action would do (default), or do it.")
    ] = True,
    jobs: JobsOpt = 0,
    no_cache: NoCacheOpt = False,
    endpoint_url: EndpointOpt = None,
) -> None:
    """Find duplicate models; link or delete redundant copies.

    Groups byte-identical files, same weights packaged differently, and components (a VAE, a text
    encoder) shared by several files. `--action` replaces redundant identical copies (a dry run unless
    `--apply`).
    """
    from fastscan import _core
    from fastscan.api import scan
    from fastscan.dedupe import find_duplicates

    if action is not DedupeAction.report and any(_core.is_url(p) for p in paths):
        # Objects are never changed in place; links and deletions are for files on this machine.
        raise fail(
            "--action works on local files only: duplicates in object storage are reported, not replaced"
        )
    try:
        report = scan(
            paths,
            hash="full",
            jobs=bounded_jobs(jobs),
            cache=None if no_cache else True,
            endpoint_url=endpoint_url,
        )
    except (OSError, ValueError) as e:
        raise fail(str(e)) from None
    report.duplicates = find_duplicates((f.to_dict() for f in report.files), keep=keep)
    try:
        if json_out and action is DedupeAction.report:
            typer.echo(json.dumps({"schema": "fastscan.dedupe/1", "duplicates": report.duplicates}, indent=2))
            return
        from fastscan.render import print_duplicates, stdout_console

        console = stdout_console()
        if action is DedupeAction.report:
            print_duplicates(report, console)
            return
        code = _act(report.duplicates, action, dry_run, console)
    except BrokenPipeError:
        raise closed_pipe() from None
    raise typer.Exit(code)


def _act(groups: list[dict], action: DedupeAction, dry_run: bool, console: Any) -> int:
    """Applies `action` to each redundant copy in the identical-files groups; prints each step, a summary."""
    from fastscan.render import size
    from fastscan.terminal import markup

    freed = done = 0
    failures = 0
    verb = {"hardlink": "hard-link", "reflink": "reflink", "delete": "delete"}[action.value]
    past = {"hardlink": "hard-linked", "reflink": "reflinked", "delete": "deleted"}[action.value]
    for g in groups:
        if g["type"] != "identical-files":
            continue
        keep = g["keep"]
        console.print(f"keep {markup(keep)}", highlight=False)
        for p in g["files"]:
            if p == keep:
                continue
            try:
                n = _apply(action, keep, p, dry_run)
            except OSError as e:
                failures += 1
                console.print(
                    f"  [red]cannot {verb}[/] {markup(p)}: {markup(e.strerror or str(e))}", highlight=False
                )
                continue
            done += 1
            freed += n
            what = "would " + verb if dry_run else past
            console.print(f"  {what} {markup(p)} ({size(n)})", highlight=False)
    copies = "copy" if done == 1 else "copies"
    if dry_run:
        console.print(
            f"dry run: {done} {copies}, {size(freed)} would be freed; add --apply to do it", highlight=False
        )
    else:
        console.print(f"{done} {copies} {past}, {size(freed)} freed", highlight=False)
    return EXIT_FINDINGS if failures else EXIT_OK


def _freed(st: os.stat_result) -> int:
    """Disk bytes removing one name of a file frees (nothing while other hard links remain)."""
    return st.st_blocks * 512 if st.st_nlink == 1 else 0


def _apply(action: DedupeAction, keep: str, victim: str, dry_run: bool) -> int:
    """Replaces `victim` by `keep` as `action` says; returns the bytes freed. Raises OSError when unsafe."""
    ks, vs = os.stat(keep), os.stat(victim)
    if (ks.st_dev, ks.st_ino) == (vs.st_dev, vs.st_ino):
        return 0  # already the same file
    if ks.st_size != vs.st_size or not filecmp.cmp(keep, victim, shallow=False):
        raise OSError(errno.EINVAL, "no longer identical to the copy kept; left alone")
    if action is DedupeAction.hardlink and ks.st_dev != vs.st_dev:
        raise OSError(errno.EXDEV, "on another filesystem than the copy kept")
    if dry_run:
        return _freed(vs)
    if action is DedupeAction.delete:
        os.unlink(victim)
        return _freed(vs)
    d, name = os.path.split(victim)
    tmp = os.path.join(d or ".", f".{name}.fastscan-dedupe")
    try:
        if action is DedupeAction.hardlink:
            os.link(keep, tmp)
        else:
            _reflink(keep, tmp)
            os.chmod(tmp, vs.st_mode & 0o7777)
            os.utime(tmp, ns=(vs.st_atime_ns, vs.st_mtime_ns))
        os.replace(tmp, victim)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise
    return _freed(vs)


def _reflink(src: str, dst: str) -> None:
    """Makes `dst` a copy-on-write clone of `src` (FICLONE; fails where the filesystem cannot)."""
    import fcntl

    with open(src, "rb") as s, open(dst, "xb") as d:
        try:
            fcntl.ioctl(d.fileno(), FICLONE, s.fileno())
        except OSError as e:
            raise OSError(e.errno, f"this filesystem cannot reflink ({e.strerror})") from None
