"""Loading an ml_collections config file, locked against misspelt keys from the file or the command line.

One loader for every config tokeff reads (training, sweeps, the demo). Why not absl's
`config_flags`? It locks the config only *after* `get_config` has run, so a typo inside the file
(`c.optim.lrr = 1e-5`) is accepted silently and the default is trained with; and its failures
(a syntax error, no `get_config`, a `get_config` returning something else) surface as tracebacks
or as misleading "unknown config key" messages. Here:

- the file is imported and `get_config(arg)` called with every failure turned into one line
  naming the file;
- with a `schema` (a ConfigDict holding every allowed key and its default), every key the file
  sets must exist in the schema, and keys the file leaves out take the schema's default;
- `--config.KEY=VALUE` overrides are parsed to the type of the value they replace, on the locked
  config, so an unknown key or a badly typed value is an error naming the key.

    config = load_config("configs/tiny.py:arg", ["--config.optim.lr=1e-4"], schema=base_config())
"""

from __future__ import annotations

import ast
import copy
import difflib
import importlib.util
import os
import sys
import uuid
from collections.abc import Sequence
from typing import Any

import ml_collections
from ml_collections.config_dict import placeholder

from tokeff.errors import UserError

_PREFIX = "--config."


def load_config(path: str, overrides: Sequence[str] = (), schema: ml_collections.ConfigDict | None = None,
                *, field: str = "--config") -> ml_collections.ConfigDict:
    """`get_config(arg)` of `path` ("file.py" or "file.py:arg"), checked against `schema`, overrides applied.

    The result is locked: setting a key it does not have raises. Raises UserError (one line) for
    a missing or broken file, a key not in `schema`, and an unknown or mistyped override.
    """
    file, _, arg = path.partition(":")
    config = _call_get_config(file, arg or None, field)
    if schema is not None:
        config = _conform(config, schema, prefix="config")
    config.lock()
    for key, text in _parse_overrides(overrides):
        set_key(config, key, text)
    return config


def REQUIRED(kind: type):  # noqa: N802 - reads as a value in a schema
    """A schema value the config file must set (typed; unset it stays None and `check_required` refuses it)."""
    return placeholder(kind)


def check_required(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict, prefix: str = "config") -> None:
    """Refuse, naming the key, a `REQUIRED` key of `schema` that `config` left unset."""
    for key in schema.keys():
        where = f"{prefix}.{key}"
        if isinstance(schema[key], ml_collections.ConfigDict):
            check_required(config[key], schema[key], where)
        elif schema[key] is None and config[key] is None:
            raise UserError(f"{where}: missing (the config file must set it)")


def set_key(config: ml_collections.ConfigDict, key: str, text: str) -> None:
    """Set dotted `key` of a locked config from command-line `text`, parsed to the current value's type."""
    where = f"config.{key}"
    *parents, leaf = key.split(".")
    node = config
    for i, name in enumerate(parents):
        if not isinstance(node, ml_collections.ConfigDict) or name not in node:
            raise UserError(f"config.{'.'.join(parents[:i + 1])}: unknown config key{_hint(node, name)}")
        node = node[name]
    if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
        raise UserError(f"{where}: unknown config key{_hint(node, leaf)}")
    current = node[leaf]
    if isinstance(current, ml_collections.ConfigDict):
        raise UserError(f"{where}: is a section; set one of its keys ({', '.join(sorted(current))})")
    value = _parse_value(where, text, current)
    try:
        with node.unlocked():
            node[leaf] = value
    except (TypeError, ValueError) as e:
        raise UserError(f"{where}: could not convert {text!r} ({e})") from None


def _call_get_config(file: str, arg: str | None, field: str) -> ml_collections.ConfigDict:
    if not os.path.exists(file):
        raise UserError(f"{field}: no such file {file!r}")
    from tokeff.inputs import check_input_file

    check_input_file(file, field)  # a regular file within the size limit: no FIFO, device or directory
    name = f"_tokeff_config_{uuid.uuid4().hex}"
    try:
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:
            raise UserError(f"{field}: {file} is not a Python file")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    except UserError:
        raise
    except SyntaxError as e:
        raise UserError(f"{field}: {file}:{e.lineno}: syntax error ({e.msg})") from None
    except Exception as e:  # noqa: BLE001 - any failure of the user's file is bad input
        raise UserError(f"{field}: {file} failed to import ({type(e).__name__}: {_first_line(e)})") from None
    finally:
        sys.modules.pop(name, None)
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise UserError(f"{field}: {file} defines no get_config(arg=None) function")
    try:
        config = get_config(arg) if arg is not None else _call_without_arg(get_config)
    except UserError as e:
        raise UserError(f"{field}: {file}: {e}") from None
    except Exception as e:  # noqa: BLE001
        mistyped = _mistyped_key(e, file)
        if mistyped:
            raise UserError(f"{field}: {file}: {mistyped}") from None
        raise UserError(f"{field}: {file}: get_config failed ({type(e).__name__}: {_first_line(e)})") from None
    if not isinstance(config, ml_collections.ConfigDict):
        raise UserError(f"{field}: {file}: get_config returned {type(config).__name__}, not an "
                        "ml_collections.ConfigDict")
    return config


def _mistyped_key(error: BaseException, file: str) -> str | None:
    """"config.optim.lr: must be a float, got str 'fast'" when `error` is ml_collections refusing a
    value of the wrong type inside the config file, else None.

    ml_collections names only the leaf ('lr'), and two sections may share a leaf name; the full
    key is found by looking the refusing section up, by identity, in the ConfigDicts the config
    file's own frames hold. Anything this lookup meets that it cannot read (a lazy reference that
    fails, a section that holds itself) gives None: the generic message stands.
    """
    try:
        return _mistyped_key_path(error, file)
    except Exception:  # noqa: BLE001 - the user's config objects, read by introspection
        return None


def _mistyped_key_path(error: BaseException, file: str) -> str | None:
    if not isinstance(error, TypeError) or not str(error).startswith("Could not override field"):
        return None
    frames, tb = [], error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    setter = next((f for f in reversed(frames) if isinstance(f.f_locals.get("self"), ml_collections.ConfigDict)
                   and "key" in f.f_locals and "value" in f.f_locals), None)
    if setter is None:
        return None
    section, key, value = setter.f_locals["self"], setter.f_locals["key"], setter.f_locals["value"]
    roots = [v for f in frames if os.path.abspath(f.f_code.co_filename) == os.path.abspath(file)
             for v in f.f_locals.values() if isinstance(v, ml_collections.ConfigDict)]
    path = next((p for p in (_find_section(r, section) for r in roots) if p is not None), None)
    if path is None:
        return None
    current = section._fields.get(key)  # noqa: SLF001 - the value it would have replaced, by type
    if isinstance(current, ml_collections.FieldReference):  # its declared type (a placeholder holds None)
        expected = current.get_type().__name__
    else:
        expected = type(current).__name__
    article = "an" if expected[0] in "aeiou" else "a"
    return f"config.{path}{key}: must be {article} {expected}, got {type(value).__name__} {value!r}"


def _find_section(node: ml_collections.ConfigDict, target: ml_collections.ConfigDict, prefix: str = "") -> str | None:
    """The dotted prefix ("optim.") under which `target` sits in `node`, "" for `node` itself."""
    if node is target:
        return prefix
    for key in node.keys():
        child = node[key]
        if isinstance(child, ml_collections.ConfigDict):
            found = _find_section(child, target, f"{prefix}{key}.")
            if found is not None:
                return found
    return None


def _call_without_arg(get_config):
    try:
        return get_config()
    except TypeError as e:
        if "argument" not in str(e):
            raise
        return get_config(None)


def _conform(config: ml_collections.ConfigDict, schema: ml_collections.ConfigDict,
             prefix: str) -> ml_collections.ConfigDict:
    """A copy of `schema` with the values `config` sets; a key `schema` lacks is refused."""
    out = copy.deepcopy(schema)
    out.unlock()
    for key in config.keys():
        where = f"{prefix}.{key}"
        value = config[key]
        if key not in schema:
            raise UserError(f"{where}: unknown config key (set in the config file){_hint(schema, key)}")
        default = schema[key]
        if isinstance(default, ml_collections.ConfigDict):
            if not isinstance(value, ml_collections.ConfigDict):
                raise UserError(f"{where}: must be a section with keys {', '.join(sorted(default))}, "
                                f"got {type(value).__name__}")
            out[key] = _conform(value, default, where)
            continue
        if isinstance(value, ml_collections.ConfigDict):
            raise UserError(f"{where}: must be a {type(default).__name__}, got a section")
        try:
            out[key] = value
        except (TypeError, ValueError) as e:
            raise UserError(f"{where}: {_first_line(e)}") from None
    return out


def _parse_overrides(overrides: Sequence[str]) -> list[tuple[str, str]]:
    """`--config.a.b=v` or `--config.a.b v` -> [("a.b", "v")]."""
    out, items, i = [], list(overrides), 0
    while i < len(items):
        item = items[i]
        if not item.startswith(_PREFIX):
            hint = " (overrides look like --config.KEY=VALUE)"
            raise UserError(f"{item}: unrecognized argument{hint}")
        key, sep, text = item[len(_PREFIX):].partition("=")
        if not sep:
            if i + 1 >= len(items) or items[i + 1].startswith(_PREFIX):
                raise UserError(f"config.{key}: no value given (use --config.{key}=VALUE)")
            i += 1
            text = items[i]
        if not key:
            raise UserError(f"{item}: no key given (use --config.KEY=VALUE)")
        out.append((key, text))
        i += 1
    return out


def _parse_value(where: str, text: str, current: Any) -> Any:
    if isinstance(current, bool):
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes"):
            return True
        if lowered in ("false", "0", "no"):
            return False
        raise UserError(f"{where}: could not convert {text!r} to a boolean (true or false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)
        except ValueError:
            raise UserError(f"{where}: could not convert {text!r} to an integer") from None
        if not number.is_integer():
            raise UserError(f"{where}: could not convert {text!r} to an integer")
        return int(number)
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise UserError(f"{where}: could not convert {text!r} to a number") from None
    if isinstance(current, str):
        return text
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        if current is None:
            return text
        raise UserError(f"{where}: could not convert {text!r} to a {type(current).__name__}") from None
    if current is not None and isinstance(current, (tuple, list)):
        if not isinstance(value, (tuple, list)):
            value = (value,)
        return type(current)(value)
    return value


def _hint(node: Any, name: str) -> str:
    if not isinstance(node, ml_collections.ConfigDict):
        return ""
    close = difflib.get_close_matches(name, list(node.keys()), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__
