"""Reading a ``dbward apply`` file: YAML text to plain data plus the line of every value.

The file is composed to YAML nodes first (not loaded straight to Python objects) so that each
value keeps the mark of where it was written; validation errors from ``schema.py`` are then
mapped back to ``file:line`` through :meth:`Document.line_of`. Counterpart: ``export.py``
writes the same format.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dbward.errors import ValidationError

Path_ = tuple[str | int, ...]


class FileError(ValidationError):
    """A ``dbward apply`` file is not valid; the message names the file and the line."""


@dataclass
class Document:
    source: str
    data: dict[str, Any]
    lines: dict[Path_, int] = field(default_factory=dict)
    base_dir: Path = field(default_factory=Path.cwd)

    def line_of(self, path: Path_) -> int | None:
        """The line of ``path``, or of its nearest enclosing value that has one."""
        p = tuple(path)
        while p:
            if p in self.lines:
                return self.lines[p]
            p = p[:-1]
        return self.lines.get((), None)

    def where(self, path: Path_) -> str:
        line = self.line_of(path)
        return f"{self.source} line {line}" if line is not None else self.source


def _node_to_data(
    loader: yaml.SafeLoader, node: yaml.Node, path: Path_, lines: dict[Path_, int], source: str
) -> Any:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                raise FileError(
                    f"{source} line {key_node.start_mark.line + 1}: keys must be names, not {key!r}"
                )
            if key in out:
                raise FileError(
                    f"{source} line {key_node.start_mark.line + 1}: the key {key!r} appears twice in the same mapping"
                )
            out[key] = _node_to_data(loader, value_node, (*path, key), lines, source)
            # The key's own line is where a reader looks for an unknown or mistyped key.
            lines[(*path, key)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_node_to_data(loader, item, (*path, i), lines, source) for i, item in enumerate(node.value)]
    return loader.construct_object(node, deep=True)


def parse_text(text: str, source: str = "<text>", base_dir: Path | None = None) -> Document:
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = f" line {mark.line + 1}" if mark is not None else ""
            problem = exc.problem or exc.context or "syntax error"
            raise FileError(f"{source}{line}: the file is not valid YAML ({problem})") from exc
        except yaml.YAMLError as exc:
            raise FileError(f"{source}: the file is not valid YAML ({exc})") from exc
        if node is None:
            return Document(source=source, data={}, base_dir=base_dir or Path.cwd())
        lines: dict[Path_, int] = {}
        try:
            data = _node_to_data(loader, node, (), lines, source)
        except yaml.constructor.ConstructorError as exc:
            mark = exc.problem_mark
            line = f" line {mark.line + 1}" if mark is not None else ""
            raise FileError(f"{source}{line}: {exc.problem}") from exc
    finally:
        loader.dispose()
    if not isinstance(data, dict):
        raise FileError(
            f"{source} line {node.start_mark.line + 1}: the file must be a mapping with sections such as "
            "users:, groups:, roles:, connections:, grants:"
        )
    return Document(source=source, data=data, lines=lines, base_dir=base_dir or Path.cwd())


def load_file(path: Path) -> Document:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise FileError(f"the file {path} does not exist") from exc
    except (PermissionError, IsADirectoryError) as exc:
        raise FileError(f"the file {path} cannot be read ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise FileError(f"the file {path} is not UTF-8 text") from exc
    return parse_text(text, str(path), base_dir=path.resolve().parent)
