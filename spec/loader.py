"""The one way in: a spec file becomes a validated, immutable model or a
SpecError that names FILE:LINE:COL.

Three passes, each stricter than the last: YAML syntax (yamlpos), the JSON
Schema (schema.yaml: shapes, unknown keys, a `doc` everywhere), then the
meaning (semantics: references, bits, offsets, versions).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from . import semantics, yamlpos
from .errors import Position, SpecError
from .model import Spec

HERE = Path(__file__).resolve().parent
DEFAULT_SPEC = HERE / "uffdio_move.yaml"
SCHEMA = HERE / "schema.yaml"


@functools.lru_cache(maxsize=1)
def _validator() -> jsonschema.protocols.Validator:
    schema = yaml.safe_load(SCHEMA.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def load(path: str | Path = DEFAULT_SPEC, display: str | None = None) -> Spec:
    """Load and validate a spec; `display` is the name used in messages."""
    path = Path(path)
    name = display or _display_name(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(Position(name, 1, 1), f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise SpecError(Position(name, 1, 1), f"not UTF-8: {exc.reason}") from None
    return loads(text, name)


def loads(text: str, name: str) -> Spec:
    data, where = yamlpos.load(text, name)
    check_schema(data, where)
    return semantics.build(data, where)


def check_schema(data: Any, where: yamlpos.Located) -> None:
    errors = list(_validator().iter_errors(data))
    if not errors:
        return
    # Report the error that comes first in the file, so fixing top-down works.
    # unevaluatedProperties also fires, spuriously, for the keys of a
    # subschema that failed for another reason: report that reason first.
    located = [(_locate(e, data, where), e) for e in errors]
    located.sort(key=lambda pe: (pe[1].validator == "unevaluatedProperties", pe[0][0].line, pe[0][0].col))
    (pos, message), _ = located[0]
    raise SpecError(pos, message)


def _locate(err: jsonschema.ValidationError, data: Any, where: yamlpos.Located) -> tuple[Position, str]:
    path = tuple(err.absolute_path)
    dotted = _dotted(path)
    if err.validator in ("additionalProperties", "unevaluatedProperties"):
        instance = err.instance if isinstance(err.instance, dict) else {}
        for key in re.findall(r"'([^']+)'", err.message):
            if key in instance:
                return where.at(path + (key,), key=True), f"unknown key {key!r}{_in(dotted)}"
    if err.validator == "required":
        missing = re.findall(r"'([^']+)'", err.message)
        key = missing[0] if missing else "?"
        return where.at(path), f"missing required key {key!r}{_in(dotted)}"
    if err.validator == "type":
        return where.at(path), f"{dotted or 'spec'}: expected {err.validator_value}, got {_kind(err.instance)}"
    if err.validator == "enum":
        options = ", ".join(str(v) for v in err.validator_value)
        return where.at(path), f"{dotted}: {err.instance!r} is not one of: {options}"
    if err.validator == "pattern":
        return where.at(path), f"{dotted}: {err.instance!r} is not of the form {_pattern_name(err.validator_value)}"
    return where.at(path), f"{dotted or 'spec'}: {err.message}"


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _in(dotted: str) -> str:
    return f" in {dotted}" if dotted else ""


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
            float: "a number", bool: "a boolean", type(None): "nothing"}.get(type(value), type(value).__name__)


_FORMS = {
    "version": "a kernel version MAJOR.MINOR",
    "id": "a behaviour id (dotted, e.g. move.errno.EEXIST.dst-populated)",
    "errno": "an errno name (E...)",
    "cname": "a C identifier",
    "ctype": "a uABI type (__u64, __s32[2], struct NAME)",
    "fieldref": "struct.field",
    "slug": "a lower-case-dashed name",
}


def _pattern_name(pattern: str) -> str:
    """Name a pattern by the $defs entry that holds it, for a readable message."""
    defs = _validator().schema.get("$defs", {})
    for name, sub in defs.items():
        if isinstance(sub, dict) and sub.get("pattern") == pattern and name in _FORMS:
            return _FORMS[name]
    return f"/{pattern}/"


def _display_name(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
