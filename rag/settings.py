"""The one settings loader, for rag.toml (rag.config.Config) and fine-tuning TOML
(finetune.config.TrainConfig) alike.

A settings class is a dataclass whose fields say everything about a setting: its type
and default (the annotation and default), its help text, the TOML section it may sit in
and its environment variable (`setting(...)` metadata). Values from a file are checked
against the type as TOML gives them; values from `--set key=value` and environment
variables are strings and are parsed to the type. An unknown key or a wrong type is a
ConfigError naming the file (or flag) and the key.
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


def setting(default=dataclasses.MISSING, *, help: str = "", section: str = "",  # noqa: A002
            key: str | None = None, env: str | None = None, factory=None):
    """A dataclass field with what the loader needs: help text, the TOML section the key
    belongs to ("" = top level), the key's name there when it differs from the field's
    (rag.toml's [generate] device is the field gen_device), and its RAG_* variable."""
    meta = {"help": help, "section": section, "key": key, "env": env}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def read_toml(path: Path) -> dict:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not UTF-8 (byte {e.start})") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None


def apply_file(obj, data: dict, where: str, *, sections_required: bool = False) -> None:
    """Set `obj`'s fields from a parsed TOML table: top-level keys, or keys inside the
    section their field names. With `sections_required`, a key that belongs to a
    section must sit in it (rag.toml's [generate] device vs [ingest] device)."""
    by_place: dict[tuple[str, str], dataclasses.Field] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("internal"):
            continue
        section, key = f.metadata.get("section", ""), f.metadata.get("key") or f.name
        by_place[(section, key)] = f
        if not sections_required or not section:
            by_place.setdefault(("", key), f)
    sections = {s for s, _ in by_place if s}
    for name, value in data.items():
        if isinstance(value, dict) and name in sections:
            for key, v in value.items():
                f = by_place.get((name, key))
                if f is None:
                    known = sorted(k for s, k in by_place if s == name)
                    raise ConfigError(f"{where}: unknown key {key!r} in [{name}] "
                                      f"(known: {', '.join(known)})")
                set_value(obj, f.name, v, f"{where}: [{name}] {key}")
            continue
        f = by_place.get(("", name))
        if f is None:
            what = "section" if isinstance(value, dict) else "setting"
            known = sorted({k for s, k in by_place if not s} | sections)
            raise ConfigError(f"{where}: unknown {what} {name!r} (known: {', '.join(known)})")
        set_value(obj, f.name, value, f"{where}: {name}")


def apply_env(obj, environ=os.environ) -> None:
    """RAG_* variables declared on the fields, parsed like --set values."""
    for f in dataclasses.fields(obj):
        var = f.metadata.get("env")
        if var and environ.get(var):
            set_value(obj, f.name, environ[var], var, from_text=True)


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
