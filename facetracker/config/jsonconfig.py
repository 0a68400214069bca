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
            values = json.loads(text)
        except json.JSONDecodeError as error:
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
