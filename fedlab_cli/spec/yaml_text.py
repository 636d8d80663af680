"""Spec YAML read defensively: UTF-8 text only, no anchors or aliases, no duplicate keys.

Each rule stops a hostile or mistaken file early, in one line:

- binary or UTF-16 files would otherwise end in a ``UnicodeDecodeError`` traceback;
- an alias bomb (aliases of aliases) is cheap to parse but expands to gigabytes when the spec
  is copied or validated, so anchors and aliases are refused outright (a spec never needs them);
- YAML keeps the last of two equal keys silently, so ``lr`` given twice is an error naming both
  lines;
- nesting and file size are capped, so neither recursion nor memory runs away;
- ``1e-3`` is read as a number, as YAML 1.2 and every user expect (PyYAML's YAML 1.1 rules
  make it a string, which strict number fields would then refuse).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from fedlab_cli.errors import FedlabError

MAX_SPEC_BYTES = 1 << 20
"""A run spec is a few hundred bytes; anything over 1 MiB is not one."""

MAX_DEPTH = 32
"""Deepest nesting of mappings and lists; a spec uses three levels."""


class SpecSyntaxError(Exception):
    """A YAML construct a spec may not use (not a ``yaml.YAMLError``: never to be ignored)."""

    def __init__(self, problem: str, line: int | None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.line = line

    def where(self) -> str:
        return f" line {self.line}" if self.line is not None else ""


class StrictLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` without anchors, aliases or duplicate keys, and with bounded depth."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SpecSyntaxError(
                "YAML anchors and aliases (&name, *name) are not allowed in a spec; write the "
                "values out",
                _line(event.start_mark),
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise SpecSyntaxError(
                    f"nested deeper than {MAX_DEPTH} levels", _line(event.start_mark)
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int | None] = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag.endswith(":merge"):
                    continue  # unhashable keys are refused by the base class
                key = self.construct_object(key_node, deep=True)
                line = _line(key_node.start_mark)
                if key in first_line:
                    raise SpecSyntaxError(
                        f"duplicate key {key!r} (first given at line {first_line[key]}); "
                        "YAML would silently keep the last",
                        line,
                    )
                first_line[key] = line
        return super().construct_mapping(node, deep=deep)


StrictLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _line(mark) -> int | None:
    return mark.line + 1 if mark is not None else None


def parse_yaml(text: str) -> Any:
    """The YAML value in ``text``; raises ``SpecSyntaxError`` or ``yaml.YAMLError``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # StrictLoader is a SafeLoader
    except ValueError as err:  # int('9' * 5000), a date like 2001-13-45
        reason = str(err).split(";")[0].split(":")[0][:80]
        raise SpecSyntaxError(f"unreadable value ({reason})", None) from None
    except RecursionError:
        raise SpecSyntaxError(f"nested deeper than {MAX_DEPTH} levels", None) from None


def read_spec_text(path: Path) -> str:
    """The text of a spec file, or a one-line ``spec:`` error for anything that is not a small
    UTF-8 text file."""
    shown = repr(str(path))
    if path.is_dir():
        raise FedlabError(f"spec: {shown} is a directory, not a spec file")
    if not path.is_file():
        raise FedlabError(f"spec: no such file {shown}")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise FedlabError(f"spec: cannot read {shown} ({err.strerror})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise FedlabError(
            f"spec: {shown} is over {MAX_SPEC_BYTES // 1024} KiB; a run spec is a small text file"
        )
    return decode_text(data, shown)


def decode_text(data: bytes, shown: str) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is allowed); a one-line error otherwise."""
    if _utf16(data):
        raise FedlabError(f"spec: {shown} is UTF-16 (or UTF-32) text; save it as UTF-8")
    nul = data.find(b"\x00")
    if nul >= 0:
        raise FedlabError(f"spec: {shown} is not a text file (NUL byte at offset {nul})")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise FedlabError(
            f"spec: {shown} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset "
            f"{err.start}); save it as UTF-8"
        ) from None


def _utf16(data: bytes) -> bool:
    """A UTF-16/32 byte-order mark, or ASCII text with every other byte NUL."""
    if data.startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")):
        return True
    sample = data[:512]
    if len(sample) < 4:
        return False
    even, odd = sample[0::2], sample[1::2]
    return (_mostly_nul(odd) and _mostly_text(even)) or (_mostly_nul(even) and _mostly_text(odd))


def _mostly_nul(part: bytes) -> bool:
    return part.count(0) > 0.9 * len(part)


def _mostly_text(part: bytes) -> bool:
    printable = sum(32 <= byte < 127 or byte in (9, 10, 13) for byte in part)
    return printable > 0.9 * len(part)
