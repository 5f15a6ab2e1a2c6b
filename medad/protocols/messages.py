"""One clear message for a schema error: pydantic's errors turned into ``file:line: key: problem; fix``.

Unknown keys come first, with the closest valid key suggested; a required key reported missing only because it
was misspelt is not reported twice; the rest are counted ("and 2 more problems after fixing this").
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from medad.errors import ConfigError
from medad.protocols.schema import Protocol
from medad.protocols.yamlio import Loc

if TYPE_CHECKING:
    from medad.protocols.loading import LoadedProtocol


def format_loc(loc: Loc) -> str:
    """``("targets", 0, "kind")`` -> ``targets[0].kind``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<protocol>"


def suggest(word: str, choices: list[str]) -> str:
    """``; did you mean 'x'?`` for the closest choice, or an empty string."""
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=0.5)
    return f"; did you mean {close[0]!r}?" if close else ""


def _unwrap(annotation: Any) -> list[Any]:
    """The concrete types inside Annotated / Optional / unions."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for arg in typing.get_args(annotation) for t in _unwrap(arg)]
    return [annotation]


def _fields_at(loc: Loc) -> list[str] | None:
    """The valid keys of the mapping at ``loc`` (None when it is not a schema model)."""
    current: list[Any] = [Protocol]
    for part in loc:
        nxt: list[Any] = []
        for typ in current:
            if isinstance(typ, type) and issubclass(typ, BaseModel):
                if isinstance(part, str) and part in typ.model_fields:
                    nxt += _unwrap(typ.model_fields[part].annotation)
            elif typing.get_origin(typ) is list and isinstance(part, int):
                nxt += _unwrap(typing.get_args(typ)[0])
            elif typing.get_origin(typ) is dict and isinstance(part, str):
                nxt += _unwrap(typing.get_args(typ)[1])
        current = nxt
    models = [t for t in current if isinstance(t, type) and issubclass(t, BaseModel)]
    return list(models[0].model_fields) if models else None


def _data_loc(loc: tuple[Any, ...], data: Any) -> Loc:
    """The part of a pydantic error location that exists in the data (drops union member tags)."""
    out: list[str | int] = []
    for part in loc:
        in_dict = isinstance(data, dict) and part in data
        in_list = isinstance(data, list) and isinstance(part, int) and 0 <= part < len(data)
        if in_dict or in_list:
            data = data[part]
        else:
            if isinstance(part, (str, int)) and isinstance(data, (dict, list)):
                out.append(part)
            break
        out.append(part)
    return tuple(out)


def _message(err: ErrorDetails, lp: LoadedProtocol) -> tuple[int, str]:
    loc = _data_loc(err["loc"], lp.yaml.data)
    kind = err["type"]
    line = lp.yaml.line_of(loc) or 0
    if kind == "extra_forbidden":
        parent, key = loc[:-1], loc[-1]
        valid = _fields_at(parent) or []
        text = (
            f"{lp.where(loc)}: unknown key {key!r} in {format_loc(parent)}{suggest(str(key), valid)} "
            f"(valid keys: {', '.join(valid)}; see docs/protocols.md)"
        )
    elif kind == "missing":
        text = (
            f"{lp.where(loc[:-1])}: {format_loc(loc[:-1])} is missing the required key {loc[-1]!r}; "
            f"add it (see docs/protocols.md)"
        )
    elif kind == "literal_error":
        expected = str(err.get("ctx", {}).get("expected", ""))
        got = err.get("input")
        text = f"{lp.where(loc)}: {format_loc(loc)}: {got!r} is not one of {expected}"
        text += suggest(str(got), re.findall(r"'([^']+)'", expected))
    else:
        got = err.get("input")
        shown = "" if isinstance(got, (dict, list)) else f" (got {got!r})"
        text = f"{lp.where(loc)}: {format_loc(loc)}: {err['msg'][0].lower()}{err['msg'][1:]}{shown}"
    return line, text


def from_validation_error(exc: ValidationError, lp: LoadedProtocol) -> ConfigError:
    """The first problem of a schema validation error as one :class:`ConfigError` (the rest counted)."""
    errors = exc.errors(include_url=False)
    misspelt = set()
    for err in errors:
        if err["type"] == "extra_forbidden":
            loc = _data_loc(err["loc"], lp.yaml.data)
            close = difflib.get_close_matches(str(loc[-1]), _fields_at(loc[:-1]) or [], n=1, cutoff=0.5)
            misspelt |= {(*loc[:-1], c) for c in close}
    errors = [e for e in errors if not (e["type"] == "missing" and _data_loc(e["loc"], lp.yaml.data) in misspelt)]
    order = {"extra_forbidden": 0}
    messages = sorted(((order.get(e["type"], 1), *_message(e, lp)) for e in errors), key=lambda m: (m[0], m[1]))
    text = messages[0][2]
    if len(messages) > 1:
        text += f" (and {len(messages) - 1} more problem{'s' if len(messages) > 2 else ''} after fixing this)"
    return ConfigError(text)
