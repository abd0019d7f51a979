"""The one settings loader, for rag.toml (rag.config.Config) and fine-tuning TOML
(finetune.config.TrainConfig) alike.

A settings class is a dataclass whose fields say everything about a setting: its type
and default (the annotation and default), its help text, its allowed values and its
environment variable (`setting(...)` metadata). A TOML section is a field holding a
dataclass of its own (`section(...)`: rag.toml's [search] is `Config.search`, a
`SearchSection`). Values from a file are checked against the type as TOML gives them;
values from `--set key=value` and environment variables are strings and are parsed to
the type. An unknown key, a wrong type or a value outside the allowed ones is a
ConfigError naming the file (or flag, or variable) and the key.
"""
from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from pathlib import Path

from ingest.errors import RagError


class ConfigError(RagError):
    """A settings file, flag or variable that cannot be used as written."""


def setting(default=dataclasses.MISSING, *, help: str = "",  # noqa: A002
            env: str | None = None, choices: tuple | None = None, factory=None):
    """A dataclass field with what the loader needs: help text, its RAG_* variable and
    the values it may take (checked by `check_choices`)."""
    meta = {"help": help, "env": env, "choices": choices}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def section(cls, *, help: str = ""):  # noqa: A002
    """A field holding the settings of one TOML section (a dataclass of `setting`s)."""
    return dataclasses.field(default_factory=cls, metadata={"section": cls, "help": help})


def sections(obj) -> dict[str, object]:
    """{section name: its settings object} of a settings object."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
            if f.metadata.get("section")}


def _settings(obj):
    """(section name or "", owner, field) of every setting, top-level ones first."""
    for f in dataclasses.fields(obj):
        if not f.metadata.get("internal") and not f.metadata.get("section"):
            yield "", obj, f
    for name, sub in sections(obj).items():
        for f in dataclasses.fields(sub):
            yield name, sub, f


def check_choices(obj, where: str) -> None:
    """Every setting with `choices` holds one of them."""
    for name, owner, f in _settings(obj):
        choices = f.metadata.get("choices")
        value = getattr(owner, f.name)
        if choices and value not in choices:
            allowed = (" or ".join(choices) if len(choices) == 2
                       else "one of " + ", ".join(choices))
            place = f"[{name}] " if name else ""
            raise ConfigError(f"{where}: {place}{f.name} must be {allowed}, not {value!r}")


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None


def apply_file(obj, data: dict, where: str) -> None:
    """Set `obj`'s settings from a parsed TOML table: top-level keys, and the keys of each
    section in its table. A section's key written at the top level is taken too (the
    first section that has it), as rag.toml has always allowed."""
    by_place: dict[tuple[str, str], tuple[object, dataclasses.Field]] = {}
    for name, owner, f in _settings(obj):
        by_place[(name, f.name)] = (owner, f)
        by_place.setdefault(("", f.name), (owner, f))
    known_sections = set(sections(obj))
    for name, value in data.items():
        if isinstance(value, dict) and name in known_sections:
            for key, v in value.items():
                place = by_place.get((name, key))
                if place is None:
                    known = sorted(k for s, k in by_place if s == name)
                    raise ConfigError(f"{where}: unknown key {key!r} in [{name}] "
                                      f"(known: {', '.join(known)})")
                set_value(place[0], place[1].name, v, f"{where}: [{name}] {key}")
            continue
        place = by_place.get(("", name))
        if place is None:
            what = "section" if isinstance(value, dict) else "setting"
            known = sorted({k for s, k in by_place if not s} | known_sections)
            raise ConfigError(f"{where}: unknown {what} {name!r} (known: {', '.join(known)})")
        set_value(place[0], place[1].name, value, f"{where}: {name}")


def apply_env(obj, environ=os.environ) -> None:
    """RAG_* variables declared on the settings, parsed like --set values."""
    for _, owner, f in _settings(obj):
        var = f.metadata.get("env")
        if var and environ.get(var):
            set_value(owner, f.name, environ[var], var, from_text=True)


def variables(obj) -> dict[str, str]:
    """{RAG_* variable: "[section] key"} of every setting that has one."""
    return {f.metadata["env"]: (f"[{name}] " if name else "") + f.name
            for name, _, f in _settings(obj) if f.metadata.get("env")}


def apply_sets(obj, items: list[str]) -> None:
    """`--set key=value` overrides."""
    names = {f.name for f in dataclasses.fields(obj)}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise ConfigError(f"--set {item!r}: expected key=value")
        if key not in names:
            raise ConfigError(f"--set: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        set_value(obj, key, value.strip(), "--set", from_text=True)


def set_value(obj, name: str, value, where: str, *, from_text: bool = False) -> None:
    kind = typing.get_type_hints(type(obj))[name]
    setattr(obj, name, _check(kind, value, where, name, from_text))


def _check(kind, value, where: str, name: str, from_text: bool):
    optional, base = _unwrap(kind)
    if from_text and isinstance(value, str):
        if optional and value.lower() in ("none", "null", ""):
            return None
        value = _parse(base, value, where, name)
    if value is None and optional:
        return None
    if typing.get_origin(base) is list and isinstance(value, str):
        value = [value]                     # paths = "corpus" means ["corpus"]
    ok = _is(base, value)
    if not ok and base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{where} must be {_type_name(kind)}, not {value!r}")
    return list(value) if isinstance(value, tuple) else value


def _parse(base, text: str, where: str, name: str):
    try:
        if base is bool:
            if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(text)
            return text.lower() in ("true", "1", "yes")
        if base is int:
            return int(text)
        if base is float:
            return float(text)
        if typing.get_origin(base) is list:
            return [v.strip() for v in text.split(",") if v.strip()]
    except ValueError:
        raise ConfigError(f"{where}: {name} = {text!r} is not {_type_name(base)}") from None
    return text


def _unwrap(kind):
    """(optional?, the type without None)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(kind) if a is not type(None)]
        return True, args[0] if len(args) == 1 else kind
    return False, kind


def _is(base, value) -> bool:
    origin = typing.get_origin(base)
    if origin is list:
        (item,) = typing.get_args(base)
        return isinstance(value, (list, tuple)) and all(_is(item, v) for v in value)
    if origin is dict:
        k, v = typing.get_args(base)
        return isinstance(value, dict) and all(_is(k, a) and _is(v, b) for a, b in value.items())
    if base is bool:
        return isinstance(value, bool)
    if base in (int, float):
        return isinstance(value, base) and not isinstance(value, bool)
    return isinstance(value, base)


def _type_name(kind) -> str:
    optional, base = _unwrap(kind)
    origin = typing.get_origin(base)
    if origin is list:
        name = "a list of " + _type_name(typing.get_args(base)[0]).removeprefix("a ") + "s"
    elif origin is dict:
        name = 'a table of "key" = "value" strings'
    else:
        name = {bool: "true or false", int: "an integer", float: "a number",
                str: "a string"}.get(base, str(base))
    return name + (" (or none)" if optional else "")
