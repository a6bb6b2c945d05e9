"""Text read from files (paths, header keys, metadata, messages quoting them) made safe to print.

A model file's name and its header are written by whoever made the file. Printed as they are, an
escape sequence in them moves the cursor, clears the screen, recolours or hides the lines around it
(a `crit` finding overwritten by a clean-looking one), and a bidirectional override shows a name
reversed. `visible` shows each such character as an escape (`\\x1b`, `\\u202e`), and each byte of a name
that is not UTF-8 (Python's surrogate escape) as `\\xNN`; everything else, accents and CJK included,
is left as it is. `markup` is the same, escaped for rich's markup as well. The JSON report keeps the
exact text (and a path's bytes in `path_b64`); only what is printed for people goes through here.
"""

from __future__ import annotations

# C0 controls, DEL, C1 controls (0x9b is CSI on terminals that read 8-bit controls)
_CONTROLS = [*range(0x20), 0x7F, *range(0x80, 0xA0)]
# bidirectional embeddings, overrides and isolates ("Trojan Source"), and the marks that reorder text
_BIDI = [0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A)]

_TABLE: dict[int, str] = {c: f"\\x{c:02x}" for c in _CONTROLS}
_TABLE.update({c: f"\\u{c:04x}" for c in _BIDI})
# a byte that is not UTF-8, as `os.fsdecode` and the `surrogateescape` streams carry it
_TABLE.update({0xDC00 + b: f"\\x{b:02x}" for b in range(0x80, 0x100)})


def visible(text: str) -> str:
    """`text` with every control character, bidirectional override and non-UTF-8 byte shown as an escape."""
    return text.translate(_TABLE)


def markup(text: str) -> str:
    """`visible(text)`, escaped for rich's console markup (for text put inside `[style]...[/]` strings)."""
    from rich.markup import escape

    return escape(visible(text))
