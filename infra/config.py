"""One typed config language for every package: YAML files mapped onto dataclasses.

A config class is a plain ``@dataclass`` whose fields carry type annotations (``int``, ``float``,
``str``, ``bool``, ``list[T]``, ``dict[str, T]``, ``T | None``, ``Literal[...]`` or another config
dataclass). ``load_config`` reads a YAML file, applies dotted ``key=value`` overrides from the command
line, and builds the dataclass tree, validating every value on the way:

* an unknown key is an error naming the key, the file and the keys that do exist;
* a value of the wrong type is an error naming the key, the file, the expected and the given type;
* a dataclass may define ``validate(self)`` for cross-field checks; raise ``ConfigError`` there;
* a dataclass with a class attribute ``LIST_KEY = "field"`` also accepts a bare list, meaning
  ``{field: list}`` (``judges: [{kind: keyword}]``).

YAML files may start with ``base: other.yaml`` (relative to the file) to inherit and override.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "load_config",
    "load_yaml",
    "build",
    "to_dict",
    "flatten",
    "save_config",
    "parse_overrides",
    "add_config_arguments",
    "config_from_args",
    "resolve_config_path",
    "shipped_config_roots",
]


class ConfigError(ValueError):
    """A config that cannot be used. The message names the key and where the value came from."""


def _origin_name(source: str | None) -> str:
    return f" in {source}" if source else ""


def shipped_config_roots() -> list[Path]:
    """Folders holding the shipped configs: the installed package ``spt_configs`` (setup.py installs
    ``configs/`` under that name) and, when the code runs from a checkout, its ``configs/``."""
    import importlib.util

    roots = []
    try:
        spec = importlib.util.find_spec("spt_configs")
    except (ImportError, ValueError):
        spec = None
    for loc in (spec.submodule_search_locations or []) if spec else []:
        roots.append(Path(loc))
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "configs").is_dir():
        roots.append(checkout / "configs")
    out: list[Path] = []
    for r in roots:
        if r.is_dir() and r.resolve() not in [o.resolve() for o in out]:
            out.append(r)
    return out


def resolve_config_path(value: str | Path, folder: str | None = None) -> Path:
    """The config file a ``--config`` value names.

    A path that exists is used as it is. Otherwise the value names a shipped config: ``trainer/tiny``,
    ``trainer/tiny.yaml`` and ``configs/trainer/tiny.yaml`` are ``configs/trainer/tiny.yaml`` of the
    shipped configs; a bare ``tiny`` or ``tiny.yaml`` is looked up in ``folder`` (the command's own
    config folder, e.g. ``trainer``), then anywhere when only one shipped config has that name.
    Returns the value unchanged when nothing matches (the caller's "not found" names it).
    """
    path = Path(value).expanduser()
    if path.is_file() or path.is_absolute():
        return path
    parts = path.parts[1:] if path.parts and path.parts[0] == "configs" else path.parts
    if not parts:
        return path
    rel = Path(*parts)
    names = [rel] if rel.suffix in (".yaml", ".yml") else [rel.with_name(rel.name + ".yaml"), rel]
    roots = shipped_config_roots()
    for root in roots:
        for name in names:
            tries = [root / folder / name] if folder and len(name.parts) == 1 else []
            for cand in [*tries, root / name]:
                if cand.is_file():
                    return cand
    if len(rel.parts) == 1:
        for root in roots:
            hits = sorted({h for name in names for h in root.rglob(name.name) if h.is_file()})
            if len(hits) == 1:
                return hits[0]
    return path


def _not_found(path: Path) -> str:
    shipped = sorted(
        str(f.relative_to(root).with_suffix(""))
        for root in shipped_config_roots()[:1]
        for f in root.rglob("*.yaml")
        if f.stem == path.stem
    )
    hint = f"; shipped configs of that name: {', '.join(shipped)}" if shipped else ""
    return f"config file not found: {path} (neither a file nor the name of a shipped config{hint})"


def load_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """A YAML mapping with its ``base:`` chain merged in (the file's own keys win).

    ``path`` may also name a shipped config (``resolve_config_path``)."""
    path = Path(path)
    if not seen:
        path = resolve_config_path(path)
    if not path.is_file():
        raise ConfigError(_not_found(path))
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is not None:
        parent = load_yaml(path.parent / base, seen + (path.resolve(),))
        data = _deep_merge(parent, data)
    return data


def _deep_merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_overrides(overrides: list[str] | None) -> dict:
    """Turn ``["a.b=1", "c=[x, y]"]`` into a nested dict; values are parsed as YAML scalars/lists."""
    out: dict = {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = item.split("=", 1)
        key = key.strip()
        if not key:
            raise ConfigError(f"override {item!r} has an empty key")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        node = out
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {p!r}")
        node[parts[-1]] = value
    return out


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Check/convert ``value`` against annotation ``tp``; ``key`` is the dotted path for messages."""
    where = _origin_name(source)
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        if isinstance(value, dict):  # a mapping can only mean the dataclass: keep its precise message
            classes = [a for a in args if dataclasses.is_dataclass(a)]
            if len(classes) == 1 and not any(get_origin(a) is dict for a in args):
                return _convert(value, classes[0], key, source)
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, key, source)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"key '{key}'{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        choices = get_args(tp)
        if value not in choices:
            raise ConfigError(f"key '{key}'{where}: expected one of {list(choices)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        list_key = getattr(tp, "LIST_KEY", None)  # a config whose one list field may be given bare
        if list_key and isinstance(value, list):
            value = {list_key: value}
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}'{where}: expected a mapping for {tp.__name__}, got {type(value).__name__}")
        return build(tp, value, source=source, prefix=key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"key '{key}'{where}: expected a list, got {type(value).__name__} {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_convert(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"key '{key}'{where}: expected a mapping, got {type(value).__name__}")
        kt, vt = get_args(tp) or (Any, Any)
        return {_convert(k, kt, f"{key}.{k}", source): _convert(v, vt, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"key '{key}'{where}: expected bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"key '{key}'{where}: expected int, got {type(value).__name__} {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML 1.1 reads "1e-3" as a string
            except ValueError:
                pass
        raise ConfigError(f"key '{key}'{where}: expected float, got {type(value).__name__} {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"key '{key}'{where}: expected str, got {type(value).__name__} {value!r}")
    if tp is Path:
        if isinstance(value, (str, Path)):
            return Path(value)
        raise ConfigError(f"key '{key}'{where}: expected a path, got {value!r}")
    return value


def build(cls: type[T], data: dict | None, source: str | None = None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly partial) mapping, validating keys and types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        name = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(
            f"unknown key '{name}'{_origin_name(source)} "
            f"(known keys{' of ' + prefix if prefix else ''}: {', '.join(sorted(fields))})"
        )
    kwargs = {}
    for name, f in fields.items():
        dotted = f"{prefix}.{name}" if prefix else name
        tp = hints[name]
        if name in data:
            kwargs[name] = _convert(data[name], tp, dotted, source)
        elif (
            dataclasses.is_dataclass(tp)
            and f.default is dataclasses.MISSING
            and f.default_factory is dataclasses.MISSING
        ):
            kwargs[name] = build(tp, {}, source, dotted)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key '{dotted}'{_origin_name(source)}")
    obj = cls(**kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as e:
            raise ConfigError(f"{e}{_origin_name(source) if source and source not in str(e) else ''}") from None
    return obj


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Load ``cls`` from an optional YAML file plus dotted ``key=value`` overrides."""
    data: dict = {}
    source = None
    if path is not None:
        data = load_yaml(Path(path))
        source = str(path)
    if overrides:
        data = _deep_merge(data, parse_overrides(overrides))
        source = f"{source} + command-line overrides" if source else "command-line overrides"
    return build(cls, data, source=source)


def flatten(d: dict, prefix: str = "") -> dict:
    """A nested config dict (``to_dict`` output) as ``{dotted key: value}``; empty mappings are leaves."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, dict) and v:
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def to_dict(obj: Any) -> Any:
    """A dataclass tree as plain YAML/JSON-friendly data."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def save_config(obj: Any, path: str | Path) -> None:
    """Write the fully resolved config beside an output."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(yaml.safe_dump(to_dict(obj), sort_keys=False), encoding="utf-8")


def add_config_arguments(parser, default_config: str | None = None) -> None:
    """Add ``--config FILE`` and trailing ``key=value`` overrides to an argparse parser.

    ``--config`` takes a file or the name of a shipped config (``resolve_config_path``); a bare name
    is looked up first in the folder of ``default_config`` (``configs/trainer/tiny.yaml``: ``trainer``).
    """
    folder = Path(default_config).parent.name if default_config else None

    def config_path(value: str) -> str:
        found = resolve_config_path(value, folder or None)
        return str(found) if found.is_file() else value

    parser.add_argument(
        "--config",
        "-c",
        default=default_config,
        type=config_path,
        help="YAML config file, or the name of a shipped config such as "
        + (f"{folder}/{Path(default_config).stem}" if default_config and folder else "trainer/tiny")
        + (f" (default: {default_config})" if default_config else ""),
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides applied on top of the config file, e.g. train.lr=3e-4",
    )


def config_from_args(cls: type[T], args) -> T:
    return load_config(cls, getattr(args, "config", None), getattr(args, "overrides", None))
