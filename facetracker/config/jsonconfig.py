"""Small dataclass configs that round-trip to JSON and refuse what they do not know."""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="JsonConfig")


class ConfigError(ValueError):
    """A config file or value that cannot be used; the message says which and why."""


MAX_NESTING = 64
"""Lists and objects inside each other that a JSON file read here may hold. This program's files
hold a few; past this, code that walks the value (printing it in a message, writing it back) could
run out of Python's recursion depth long after the file was read."""


class NestedTooDeep(ValueError):
    """JSON with lists or objects nested deeper than anything this program reads."""

    def __init__(self) -> None:
        super().__init__(f"lists or objects nested more than {MAX_NESTING} levels deep")


def parse_json(text: str | bytes) -> Any:
    """`json.loads` for text from a file or a person. JSON nested too deeply (which makes Python's
    parser raise RecursionError, or would make later code do so) raises NestedTooDeep, a
    ValueError like every other JSON that cannot be read, so each caller that handles bad JSON
    handles this too."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise NestedTooDeep() from None
    pending = [(value, 1)]
    while pending:  # without recursion, for the same reason
        item, depth = pending.pop()
        children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth >= MAX_NESTING:
                    raise NestedTooDeep()
                pending.append((child, depth + 1))
    return value


@dataclasses.dataclass
class JsonConfig:
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls: type[T], values: dict[str, Any], *, source: str = "config") -> T:
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: expected a JSON object, got {type(values).__name__}")
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - set(fields))
        if unknown:
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}")
        kwargs = {}
        for name, value in values.items():
            kwargs[name] = _coerce(hints[name], value, f"{source}: field '{name}'")
        config = cls(**kwargs)
        config.validate(source)
        return config

    @classmethod
    def from_json(cls: type[T], text: str, *, source: str = "config") -> T:
        try:
            values = parse_json(text)
        except NestedTooDeep as error:
            raise ConfigError(f"{source}: not a config file ({error})") from None
        except ValueError as error:  # a JSONDecodeError, or an integer of more digits than Python converts
            raise ConfigError(f"{source}: not valid JSON ({error})") from None
        return cls.from_dict(values, source=source)

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as error:
            raise ConfigError(f"{path}: cannot read ({error.strerror or error})") from None
        return cls.from_json(text, source=str(path))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)

    def validate(self, source: str = "config") -> None:
        """Subclasses check ranges here and raise ConfigError."""


def _coerce(hint: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where)
    if isinstance(hint, type) and issubclass(hint, JsonConfig):
        return hint.from_dict(value, source=where)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be text, got {value!r}")
        return value
    return value
