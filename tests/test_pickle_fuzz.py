"""Differential fuzzing of the pickle reader against CPython's `pickletools` (docs/pickle-policy.md).

Pickles are generated (by `pickle.dumps` of varied objects and global references, and as hand-built opcode
streams), decoded by `pickletools.genops` (which never imports or calls anything) and by the core; both
must name the same imports at the same offsets. Nothing is ever loaded.

`FASTSCAN_FUZZ_CASES` sets the number of cases per test (default 300: a few seconds in CI).
"""

from __future__ import annotations

import collections
import io
import os
import os.path
import pickle
import pickletools
import random
import struct

from fastscan import _core

CASES = int(os.environ.get("FASTSCAN_FUZZ_CASES", "300"))

# Objects that pickle as references to a global (pickling never calls them).
GLOBAL_REFS = [
    collections.OrderedDict,
    collections.Counter,
    os.path.join,
    len,
    io.BytesIO,
    struct.pack,
    random.Random,
    pickletools.genops,
    collections.abc.Mapping,
]


def random_object(rng: random.Random, depth: int = 0):
    kinds = ["int", "big", "str", "bytes", "float", "none", "bool", "global"]
    if depth < 3:
        kinds += ["list", "tuple", "dict", "set", "odict"] * 2
    k = rng.choice(kinds)
    if k == "int":
        return rng.randint(-(2**31), 2**31)
    if k == "big":
        return rng.randint(-(2**80), 2**80)
    if k == "str":
        return "".join(rng.choice("ab_.\n\\'\"é€x") for _ in range(rng.randint(0, 12)))
    if k == "bytes":
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 12)))
    if k == "float":
        return rng.uniform(-1e9, 1e9)
    if k == "none":
        return None
    if k == "bool":
        return rng.random() < 0.5
    if k == "global":
        return rng.choice(GLOBAL_REFS)
    items = [random_object(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if k == "list":
        return items
    if k == "tuple":
        return tuple(items)
    if k == "set":
        return {repr(i) for i in items}
    pairs = [(repr(i), random_object(rng, depth + 1)) for i in items]
    return dict(pairs) if k == "dict" else collections.OrderedDict(pairs)


def genops_imports(data: bytes) -> list[tuple[str, str, int]]:
    """(module, name, offset) of every GLOBAL / INST / STACK_GLOBAL, from pickletools' decoding alone.

    STACK_GLOBAL takes the two strings pushed before it (directly or fetched from the memo), which is
    how every pickle `pickle.dumps` writes uses it."""
    out: list[tuple[str, str, int]] = []
    memo: dict[int, object] = {}
    pushed: list[object] = []
    for op, arg, pos in pickletools.genops(data):
        name = op.name
        if name in ("GLOBAL", "INST"):
            module, qual = arg.split(" ", 1)
            out.append((module, qual, pos))
            pushed.append(None)
        elif name == "STACK_GLOBAL":
            out.append((pushed[-2], pushed[-1], pos))
            pushed.append(None)
        elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING",
                      "SHORT_BINSTRING"):
            pushed.append(arg)
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            pushed.append(memo.get(arg))
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg] = pushed[-1] if pushed else None
        elif name == "MEMOIZE":
            memo[len(memo)] = pushed[-1] if pushed else None
        elif name not in ("PROTO", "FRAME"):
            pushed.append(None)
    return out


def core_imports(data: bytes) -> list[tuple[str, str, int]]:
    out = []
    for i in _core.pickle_imports(data):
        if i["opcode"] == "BUILD":
            continue  # a BUILD on an imported object is reported as a second use, not an import
        written = i["written"] or f"{i['module']} {i['name']}"
        module, name = written.split(" ", 1)
        out.append((module, name, i["pos"]))
    return out


def test_dumps_of_varied_objects_agree_with_pickletools():
    rng = random.Random(9)
    seen = 0
    for case in range(CASES):
        obj = random_object(rng)
        data = pickle.dumps(obj, protocol=case % 6)
        want = genops_imports(data)
        assert core_imports(data) == want, (case, obj, data)
        seen += len(want)
    assert seen > CASES // 4  # the generator does exercise imports


def _ident(rng: random.Random) -> str:
    parts = [
        "".join(rng.choice("abcxyz_") for _ in range(rng.randint(1, 6))) for _ in range(rng.randint(1, 3))
    ]
    return ".".join("m" + p for p in parts)


def hand_built(rng: random.Random) -> bytes:
    """A well-formed protocol 4 opcode stream: pushes, memo traffic, imports (GLOBAL and STACK_GLOBAL,
    operands direct or through the memo), containers; every value popped at the end but one."""
    out = bytearray(b"\x80\x04")
    depth = 0
    strings: list[int] = []  # memo slots holding strings
    slots = 0

    def push_str(s: str):
        b = s.encode()
        out.extend(b"\x8c" + bytes([len(b)]) + b)

    for _ in range(rng.randint(1, 40)):
        k = rng.randrange(8)
        if k == 0:
            push_str(_ident(rng))
            out.extend(b"\x94")
            strings.append(slots)
            slots += 1
            out.extend(b"0")
        elif k == 1:
            out.extend(b"c" + _ident(rng).encode() + b"\n" + _ident(rng).encode() + b"\n")
            depth += 1
        elif k == 2 and len(strings) >= 2:
            a, b = rng.sample(strings, 2)
            for s in (a, b):
                out.extend(b"h" + bytes([s]) if s < 256 else b"j" + struct.pack("<I", s))
            out.extend(b"\x93")
            depth += 1
        elif k == 3:
            push_str(_ident(rng))
            push_str(_ident(rng))
            out.extend(b"\x93")
            depth += 1
        elif k == 4:
            out.extend(b"J" + struct.pack("<i", rng.randint(-(2**31), 2**31 - 1)))
            depth += 1
        elif k == 5:
            out.extend(b"(" + b"K\x01" * rng.randint(0, 3) + b"t")
            depth += 1
        elif k == 6 and depth:
            out.extend(b"\x94")
            slots += 1
        elif depth:
            out.extend(b"0")
            depth -= 1
    out.extend(b"0" * depth + b"N.")
    return bytes(out)


def test_hand_built_streams_agree_with_pickletools():
    rng = random.Random(91)
    for case in range(CASES):
        data = hand_built(rng)
        pickletools.dis(data, out=io.StringIO())  # well-formed (stack and memo checked)
        assert core_imports(data) == genops_imports(data), (case, data)


def test_mutated_pickles_never_crash_and_lose_no_decoded_import():
    rng = random.Random(909)
    for case in range(CASES):
        base = bytearray(hand_built(rng) if case % 2 else pickle.dumps(random_object(rng), protocol=case % 6))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(base))
            base[i] = rng.randrange(256)
        data = bytes(base)
        before = []
        try:
            for op, arg, pos in pickletools.genops(data):
                if op.name == "GLOBAL" and arg.isascii():
                    before.append(pos)
        except Exception:  # noqa: BLE001 - a damaged stream: what decoded before the damage counts
            pass
        got = {i["pos"] for i in _core.pickle_imports(data) if i["opcode"] == "GLOBAL"}
        assert set(before) <= got, (case, data)
