"""Safe YAML loading that remembers where every key was written.

Protocols are data, never code: only YAML's safe scalar types are constructed (no tags, no ``eval``, no
object instantiation), duplicate keys are errors, and each key's line number is kept so that a schema error
can point at the line in the file.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medad.errors import ConfigError
from medad.utils.privacy import is_path_like, placeholder

Loc = tuple[str | int, ...]


@dataclass
class LoadedYaml:
    """A parsed YAML document with the line (1-based) of every mapping key and sequence item.

    Attributes:
        data: the plain Python value (dicts, lists, scalars).
        lines: ``loc -> line``, where ``loc`` is the path of keys / list indices from the document root.
        source: the file name, for messages.
    """

    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    source: str = "<string>"

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc`` or of its nearest ancestor that has one."""
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def where(self, loc: Loc) -> str:
        """``file:line`` for messages (``file`` alone when the line is unknown)."""
        line = self.line_of(loc)
        return f"{self.source}:{line}" if line is not None else self.source


_PLAIN_TAGS = ("tag:yaml.org,2002:map", "tag:yaml.org,2002:seq")


def _walk(loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, lines: dict[Loc, int], source: str) -> Any:
    if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.tag not in _PLAIN_TAGS:
        raise ConfigError(
            f"{source}:{node.start_mark.line + 1}: YAML tag {node.tag!r} is not allowed; protocols hold plain "
            f"values only (remove the tag)"
        )
    if isinstance(node, yaml.MappingNode):
        loader.flatten_mapping(node)
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: a mapping key must be a plain name; "
                    f"write `key: value` with a simple key"
                )
            key = loader.construct_object(key_node)
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                key = str(key_node.value)
            child: Loc = (*loc, key)
            if key in out:
                raise ConfigError(
                    f"{source}:{key_node.start_mark.line + 1}: key {key!r} appears twice in the same mapping "
                    f"(first at line {lines[child]}); keep only one"
                )
            lines[child] = key_node.start_mark.line + 1
            out[key] = _walk(loader, value_node, child, lines, source)
        return out
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            item_loc: Loc = (*loc, i)
            lines[item_loc] = item.start_mark.line + 1
            items.append(_walk(loader, item, item_loc, lines, source))
        return items
    return loader.construct_object(node, deep=True)


def load_yaml_text(text: str, source: str = "<string>") -> LoadedYaml:
    """Parse YAML text safely, recording key lines.

    Args:
        text: the YAML document.
        source: name used in error messages (usually the file path).

    Returns:
        The parsed document with its line map.

    Raises:
        ConfigError: on a syntax error, a non-safe tag, a duplicate key or several documents.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        lines: dict[Loc, int] = {}
        if node is None:
            return LoadedYaml({}, lines, source)
        lines[()] = node.start_mark.line + 1
        data = _walk(loader, node, (), lines, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{source}{line}: {problem}; fix the YAML syntax there") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML ({exc}); fix the YAML syntax") from None
    finally:
        loader.dispose()
    return LoadedYaml(data, lines, source)


def load_yaml_file(path: str | Path) -> LoadedYaml:
    """Read and parse a YAML file safely (see :func:`load_yaml_text`).

    Raises:
        ConfigError: when the file is missing or unreadable, or the YAML is invalid.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"protocol file {path} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"protocol file {path} cannot be read ({exc}); check the file") from None
    return load_yaml_text(text, str(path))


def _hide_option_paths(item: dict[str, Any], name: Any) -> None:
    """Replace the path-like values of ``item["options"]`` by placeholders, in place."""
    options = item.get("options") or {}
    for key, value in options.items():
        if isinstance(value, str) and is_path_like(value):
            options[key] = placeholder(f"{key}", name)


def shareable_protocol(resolved: dict[str, Any]) -> dict[str, Any]:
    """The resolved protocol with every path replaced by a placeholder (``<root of isic>``, ``<output folder>``),
    for the run folder's shareable ``protocol.resolved.yaml`` (the real one is in ``private/``)."""
    data = copy.deepcopy(resolved)
    data["output"] = placeholder("output folder")
    training = data.get("training") or {}
    own = [d for m in data.get("models", []) for d in ((m.get("training") or {}).get("datasets") or [])]
    for dataset in [*data.get("targets", []), *training.get("datasets", []), *own]:
        if dataset.get("root") is not None:
            dataset["root"] = placeholder("root", dataset.get("name"))
        _hide_option_paths(dataset, dataset.get("name"))
        pool = (dataset.get("references") or {}).get("from") or {}
        if pool.get("folder") is not None:
            pool["folder"] = placeholder("reference folder", dataset.get("name"))
    for model in data.get("models", []):
        _hide_option_paths(model, model.get("name"))  # e.g. a release checkpoint (release_weights)
        if model.get("checkpoint") is not None:
            model["checkpoint"] = placeholder("checkpoint", model.get("name"))
        for role, source in (model.get("weights") or {}).items():
            if isinstance(source, dict) and source.get("file") is not None:
                source["file"] = placeholder(f"{role} weights file", model.get("name"))
    executor = data.get("executor")
    if isinstance(executor, dict) and executor.get("folder") is not None:
        executor["folder"] = placeholder("executor folder")
    return data
