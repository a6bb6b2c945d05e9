"""One report type (issue 10 item 4): docs/report.schema.json, generated from the Rust types (a Rust test
regenerates it and fails when it differs), is the reference; the prose in docs/report-schema.md, the
TypedDicts of `_core.pyi` and the classes of `fastscan.model` must name the same fields, with the same
optionality, and a real report must validate against it.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import re
from pathlib import Path

import pytest

from fastscan import _core, model, synth

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs/report.schema.json").read_text())
DOC = (ROOT / "docs/report-schema.md").read_text()
STUBS = ast.parse((ROOT / "python/fastscan/_core.pyi").read_text())

# schema object -> the heading of its section in docs/report-schema.md (its first table lists the fields)
DOC_SECTIONS = {
    "FileReport": "## File object",
    "Finding": "### finding",
    "ComponentReport": "### component",
    "Hashes": "### `hashes`",
    "FileError": "### `error`",
    "Identification": "### `identification`",
    "Provenance": "### `provenance`",
    "Merge": "#### `merge`",
    "Parent": "#### parent",
    "Training": "#### `training`",
    "Part": "### Diffusers folders and `part`",
    "Fingerprint": "### `fingerprint`",
    "ComponentPrint": "#### fingerprint component",
    "Entry": "#### fingerprint entry",
}
# schema object -> the class of fastscan.model that holds it (the others stay TypedDicts in Python)
MODEL_CLASSES = {
    "FileReport": model.FileReport,
    "Finding": model.Finding,
    "ComponentReport": model.Component,
    "Hashes": model.Hashes,
    "FileError": model.FileError,
    "Identification": model.Identification,
}
# schema enum -> the Python enum of fastscan.model with the same names (what Python compares reports with)
MODEL_ENUMS = {"Format": model.Format, "Kind": model.Kind, "Arch": model.Arch}
# fields a model class holds differently, on purpose
MODEL_EXCEPTIONS = {
    # `path` holds the exact path (os.fsdecode of path_b64); to_dict writes path_b64 back from it
    ("FileReport", "path_b64"),
}
# fields the model classes add: what a newer core sends that this module does not know yet
MODEL_EXTRA = {"FileReport": {"extra"}, "Hashes": {"extra"}}


def objects() -> dict[str, dict]:
    """Every object type of the schema: the root (the file object) and each object definition."""
    out = {SCHEMA["title"]: SCHEMA}
    out.update({k: v for k, v in SCHEMA["$defs"].items() if v.get("type") == "object"})
    return out


def enums() -> dict[str, list[str]]:
    """Every string enum of the schema: name -> its values."""
    out = {}
    for name, d in SCHEMA["$defs"].items():
        if "enum" in d:
            out[name] = list(d["enum"])
        elif "oneOf" in d:
            out[name] = [v for alt in d["oneOf"] for v in alt.get("enum", [alt.get("const")])]
    return out


def nullable(prop: dict) -> bool:
    """The property's schema admits null."""
    t = prop.get("type")
    if t == "null" or (isinstance(t, list) and "null" in t):
        return True
    return any(nullable(alt) for alt in prop.get("anyOf", []) + prop.get("oneOf", []))


def is_any(prop: dict) -> bool:
    return prop is True or prop == {}


def stub_classes() -> dict[str, dict[str, str]]:
    """TypedDicts of _core.pyi: name -> {field: annotation text}."""
    out = {}
    for node in STUBS.body:
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) == "TypedDict" for b in node.bases):
            out[node.name] = {
                n.target.id: ast.unparse(n.annotation) for n in node.body if isinstance(n, ast.AnnAssign)
            }
    return out


def stub_literals() -> dict[str, list[str]]:
    """`Name = Literal[...]` aliases of _core.pyi."""
    out = {}
    for node in STUBS.body:
        if isinstance(node, ast.Assign) and ast.unparse(node.value).startswith("Literal["):
            out[node.targets[0].id] = list(ast.literal_eval(node.value.slice))
    return out


def doc_fields(heading: str) -> set[str]:
    """The field names in the first column of the first table after `heading` in report-schema.md."""
    lines = DOC.splitlines()
    assert heading in lines, f"docs/report-schema.md has no section {heading!r}"
    rows = []
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith("#"):
            break
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    assert len(rows) > 2, f"no table under {heading!r}"
    return {n for row in rows[2:] for n in re.findall(r"`([a-z_0-9]+)`", row.split("|")[1])}


def test_every_schema_object_has_a_doc_section_a_stub_and_no_more():
    assert set(objects()) == set(DOC_SECTIONS)
    assert {f"{name}Dict" for name in objects()} == set(stub_classes())


@pytest.mark.parametrize("name", sorted(DOC_SECTIONS))
def test_docs_list_exactly_the_schema_fields(name):
    assert doc_fields(DOC_SECTIONS[name]) == set(objects()[name]["properties"])


@pytest.mark.parametrize("name", sorted(DOC_SECTIONS))
def test_stub_typeddicts_match_the_schema(name):
    obj = objects()[name]
    stub = stub_classes()[f"{name}Dict"]
    assert set(stub) == set(obj["properties"])
    for field, prop in obj["properties"].items():
        ann = stub[field]
        required = field in obj.get("required", [])
        assert ann.startswith("NotRequired[") != required, f"{name}.{field}: {ann}"
        if not is_any(prop):
            assert ("None" in ann) == nullable(prop), f"{name}.{field}: {ann}"


def test_stub_literals_match_the_schema_enums():
    lits = stub_literals()
    for name, values in enums().items():
        assert sorted(lits[name]) == sorted(values), name


@pytest.mark.parametrize("name", sorted(MODEL_ENUMS))
def test_model_enums_match_the_schema_enums(name):
    assert sorted(m.value for m in MODEL_ENUMS[name]) == sorted(enums()[name])


@pytest.mark.parametrize("obj", ["FileReport", "Part"])
def test_format_kind_and_arch_are_enums_in_the_schema_and_the_stubs(obj):
    props = objects()[obj]["properties"]
    stub = stub_classes()[f"{obj}Dict"]
    for field, enum in (("format", "Format"), ("kind", "Kind"), ("arch", "Arch")):
        assert props[field] == {"$ref": f"#/$defs/{enum}"}, f"{obj}.{field}"
        assert stub[field] == enum, f"{obj}.{field}"
        if obj == "FileReport":  # the model class holds the same Literal type (the stub's, imported)
            fields = {f.name: f for f in dataclasses.fields(model.FileReport)}
            assert str(fields[field].type) == f"{enum}Name", f"{obj}.{field}"


def doc_row(heading: str, field: str) -> str:
    """The row of `field` (its first column starts with it) in the first table after `heading`."""
    lines = DOC.splitlines()
    for line in lines[lines.index(heading) + 1 :]:
        if line.startswith(f"| `{field}`"):
            return line
    raise AssertionError(f"docs/report-schema.md: no row for {field!r} under {heading!r}")


@pytest.mark.parametrize(
    ("field", "enum", "parts_only"),
    [("format", "Format", {"json"}), ("kind", "Kind", {"index"}), ("arch", "Arch", set())],
)
def test_the_docs_list_every_value_of_the_enums(field, enum, parts_only):
    listed = set(re.findall(r"`([a-z0-9-]+)`", doc_row("## File object", field).split("|")[3]))
    assert set(enums()[enum]) - parts_only <= listed
    part = doc_row(DOC_SECTIONS["Part"], "size")
    assert all(f"`{v}`" in part for v in parts_only)


def test_the_archs_are_those_of_the_rules():
    rules = json.loads((ROOT / "rust/core/src/rules.json").read_text())
    archs = list(dict.fromkeys(r["arch"] for r in rules["archs"]))
    assert enums()["Arch"] == [*archs, "unknown"]


@pytest.mark.parametrize("name", sorted(MODEL_CLASSES))
def test_model_classes_match_the_schema(name):
    obj = objects()[name]
    fields = {f.name: f for f in dataclasses.fields(MODEL_CLASSES[name])}
    want = {f for f in obj["properties"] if (name, f) not in MODEL_EXCEPTIONS}
    assert set(fields) - MODEL_EXTRA.get(name, set()) == want
    for field in want:
        prop = obj["properties"][field]
        ann = str(fields[field].type)
        if is_any(prop):
            continue
        # None where the core writes null, or omits a single value; an omitted list is an empty list
        optional = nullable(prop) or (field not in obj.get("required", []) and prop.get("type") != "array")
        assert ("None" in ann) == optional, f"{name}.{field}: {ann}"


def _check(value, schema, where="file"):
    """A small validator for what the generated schema uses: $ref, anyOf/oneOf, type, enum/const,
    properties/required/additionalProperties, items."""
    if schema is True or schema == {}:
        return
    if "$ref" in schema:
        _check(value, SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], where)
        return
    for key in ("anyOf", "oneOf"):
        if key in schema:
            errors = []
            for alt in schema[key]:
                try:
                    _check(value, alt, where)
                    return
                except AssertionError as e:
                    errors.append(str(e))
            raise AssertionError(f"{where}: no alternative fits: {errors}")
    if "const" in schema:
        assert value == schema["const"], f"{where}: {value!r} != {schema['const']!r}"
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    types = schema.get("type")
    if types is not None:
        types = types if isinstance(types, list) else [types]
        py = {
            "null": type(None),
            "boolean": bool,
            "string": str,
            "array": list,
            "object": dict,
            "number": (int, float),
            "integer": int,
        }
        assert any(
            isinstance(value, py[t]) and not (t in ("integer", "number") and isinstance(value, bool))
            for t in types
        ), f"{where}: {value!r} is not {types}"
    if isinstance(value, dict):
        props = schema.get("properties", {})
        for k in schema.get("required", []):
            assert k in value, f"{where}: {k} missing"
        for k, v in value.items():
            if k in props:
                _check(v, props[k], f"{where}.{k}")
            else:
                extra = schema.get("additionalProperties", True)
                assert extra is not False, f"{where}: unexpected field {k}"
                _check(v, extra, f"{where}.{k}")
    if isinstance(value, list) and "items" in schema:
        for i, v in enumerate(value):
            _check(v, schema["items"], f"{where}[{i}]")


def _library(tmp_path: Path) -> Path:
    """Files whose reports use every optional part of the schema: identification, provenance, a
    diffusers folder's parts, a fingerprint, an error, and path_b64 (a name that is not UTF-8)."""
    lib = tmp_path / "lib"
    lib.mkdir()
    recipe = json.dumps({"type": "webui", "primary_model_hash": "0" * 64, "interp_method": "Weighted sum"})
    synth.write_layout(lib / "vae.safetensors", "vae-sd", metadata={"sd_merge_recipe": recipe})
    synth.write_layout(lib / "lora.safetensors", "lora-sd15-kohya", metadata={"ss_network_dim": "8"})
    (lib / "folder/vae").mkdir(parents=True)
    index = {"_class_name": "StableDiffusionPipeline", "vae": ["diffusers", "AutoencoderKL"]}
    (lib / "folder/model_index.json").write_text(json.dumps(index))
    synth.write_layout(lib / "folder/vae/diffusion_pytorch_model.safetensors", "diffusers-sd15-vae")
    (lib / "cut.safetensors").write_bytes((1 << 20).to_bytes(8, "little") + b'{"a": ')
    (lib / "loop").symlink_to(lib)  # followed: an error report of kind loop
    Path(os.fsdecode(bytes(lib) + b"/n\xffo.safetensors")).write_bytes(b"not a model")
    return lib


def test_the_validator_rejects_what_the_schema_excludes(tmp_path):
    r = _core.scan_file(synth.write_layout(tmp_path / "vae.safetensors", "vae-sd"), hash="none")
    _check(r, SCHEMA)
    for broken in (
        {**r, "format": "zip"},
        {**r, "size": "12"},
        {k: v for k, v in r.items() if k != "hashes"},
        {**r, "identification": {**r["identification"], "score": None}},
        {**r, "findings": [{"check": "x", "severity": "fatal", "message": "", "details": {}}]},
    ):
        with pytest.raises(AssertionError):
            _check(broken, SCHEMA)


def test_real_reports_validate_and_survive_the_model_round_trip(tmp_path):
    lib = _library(tmp_path)
    reports = list(_core.Scanner([lib], hash="components", fingerprint=True, follow_links=True))
    assert len(reports) == 6
    seen = set()
    for r in reports:
        _check(r, SCHEMA)
        seen.update(k for k, v in r.items() if v)
        assert model.FileReport.from_dict(r).to_dict() == r
    assert {"identification", "provenance", "parts", "fingerprint", "error", "path_b64"} <= seen


def test_stub_names_every_function_and_class_the_binding_registers():
    """Each `wrap_pyfunction!`/`add_class` of the binding has its declaration in `_core.pyi`, so the
    typed surface is the whole surface (read from the Rust source, not from the module under test)."""
    import re

    rs = (ROOT / "rust/python/src/lib.rs").read_text()
    registered = set(re.findall(r"wrap_pyfunction!\((\w+)", rs)) | set(re.findall(r"add_class::<(\w+)>", rs))
    declared = {n.name for n in STUBS.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    assert registered, "no registrations found in the binding"
    assert registered - declared == set()
