"""Load configuration files into validated models, with errors that name file, line and field.

A load either returns a complete, validated :class:`~configs.schema.AppConfig` or raises one
:class:`ConfigError` that lists every problem found (all bad rows of all files), each as
``file:line: dotted.field.path: message``. Nothing is ever half-applied.

Line numbers come from the YAML node tree (``yaml.compose``): a pydantic error location such as
``('cameras', 3, 'zones', 0, 'polygon')`` is walked down the node tree and reported at the line of
the deepest node that exists (a missing field is reported at the line of the mapping that lacks it).
CSV inventories report the physical line where the row starts.

Paths written in a file resolve against that file's directory: ``state_dir``, ``detector.models_dir``,
``cameras_file`` and camera ``url`` values that are plain relative file paths. Paths that come from
defaults or overrides resolve against the current working directory. Every path in the returned
config is absolute, so Ray workers with another working directory see the same files.

Camera URLs may carry credentials (``rtsp://user:pass@host/...``); error messages never echo a
password (see :func:`configs.redact.redact_url`).
"""

from __future__ import annotations

import csv
import difflib
import io
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union, get_args, get_origin
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from configs.redact import redact_text, url_password
from configs.schema import AppConfig, CameraConfig

__all__ = [
    "CSV_COLUMNS",
    "ENV_OVERRIDES",
    "ConfigError",
    "ConfigIssue",
    "load_cameras",
    "load_config",
]

Loc = tuple[str | int, ...]

CSV_COLUMNS: tuple[str, ...] = (
    "id",
    "url",
    "district",
    "purpose",
    "analytics_fps",
    "decode_mode",
    "loop",
    "nominal_resolution",
    "nominal_fps",
)
"""Columns of a CSV camera inventory (any order; ``id`` and ``url`` are required)."""

_CSV_REQUIRED = ("id", "url")

ENV_OVERRIDES: Mapping[str, str] = {
    "CCTV_RAY_ADDRESS": "cluster.ray_address",
    "CCTV_S3_ENDPOINT": "storage.endpoint",
    "CCTV_S3_BUCKET": "storage.bucket",
}
"""Environment variables that :func:`load_config` applies over the file (when set and non-empty)."""

_OVERRIDES_LABEL = "<overrides>"

# The C parser is ~10x faster on 10k-camera inventories and never prints source snippets
# (which could echo a URL with a password) in its error marks.
_YamlLoader: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_REPR_MAX = 80


# --------------------------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found while loading configuration.

    Attributes:
        file: The file the problem is in (as the caller named it), or the source of an override,
            e.g. ``$CCTV_S3_BUCKET`` or ``<overrides>``.
        line: 1-based line in ``file``; None when there is no line (overrides, unreadable file).
        location: Dotted field path such as ``cameras[3].zones[0].polygon``; empty for file-level
            problems such as YAML syntax errors.
        message: What is wrong, with the offending value where that helps (passwords redacted).
    """

    file: str
    line: int | None
    location: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.location}: {self.message}" if self.location else f"{where}: {self.message}"


class ConfigError(ValueError):
    """Configuration could not be loaded; ``issues`` lists every problem found, in file/line order.

    ``str(error)`` is one line per issue, e.g.
    ``configs/city.yaml:42: cameras[3].analytics_fps: Input should be greater than 0 (got -1)``.
    """

    def __init__(self, issues: Iterable[ConfigIssue]) -> None:
        self.issues: list[ConfigIssue] = [
            replace(
                i,
                location=redact_text(i.location).replace("\n", " "),
                message=redact_text(i.message).replace("\n", " "),
            )
            for i in issues
        ]
        if not self.issues:
            raise ValueError("ConfigError needs at least one issue")
        super().__init__("\n".join(str(i) for i in self.issues))

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle their args by default; ours is built from issues (Ray pickles errors).
        return (type(self), (self.issues,))


# ------------------------------------------------------------------------------------------ redaction


# ------------------------------------------------------------------------------------------ locations


def _format_loc(loc: Sequence[str | int]) -> str:
    out: list[str] = []
    for part in loc:
        if isinstance(part, int):
            out.append(f"[{part}]")
        else:
            out.append(f".{part}" if out else str(part))
    return "".join(out)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _node_line(node: yaml.Node | None, loc: Sequence[str | int]) -> int | None:
    """Line of the deepest node of ``node`` along ``loc`` (mapping entries report their key's line)."""
    if node is None:
        return None
    line = _line(node)
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            # The last duplicate wins in the constructed data, so search from the end.
            for key, value in reversed(node.value):
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    line, node = _line(key), value
                    break
            else:
                break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
            node = node.value[part]
            line = _line(node)
        else:
            break
    return line


def _node_at(node: yaml.Node | None, key: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for k, v in reversed(node.value):
            if isinstance(k, yaml.ScalarNode) and k.value == key:
                return v
    return None


@dataclass(frozen=True)
class _Origin:
    """Where one camera entry came from: its file, its index there, and its YAML node or CSV line."""

    file: str
    index: int
    node: yaml.Node | None = None
    line: int | None = None

    def line_of(self, sub: Sequence[str | int]) -> int | None:
        return _node_line(self.node, sub) if self.node is not None else self.line


@dataclass
class _Inventory:
    cameras: list[Any]
    origins: list[_Origin]
    issues: list[ConfigIssue]


# ------------------------------------------------------------------------------------- model helpers


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model type inside ``annotation`` (unwrapping list[...] and Optional[...]), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin in (list, tuple, Union, types.UnionType):
        for arg in get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _fields_at(loc: Sequence[str | int]) -> list[str]:
    """Field names of the model at ``loc`` under AppConfig (list indices are skipped)."""
    model: type[BaseModel] | None = AppConfig
    for part in loc:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return []
        model = _model_in(model.model_fields[part].annotation)
    return list(model.model_fields) if model is not None else []


def _is_path_annotation(annotation: Any) -> bool:
    return annotation is Path or (get_origin(annotation) in (Union, types.UnionType) and Path in get_args(annotation))


def _path_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Dotted locations of every Path field in ``model``'s nested sections (not inside lists)."""
    found: list[tuple[str, ...]] = []
    for name, info in model.model_fields.items():
        if _is_path_annotation(info.annotation):
            found.append((*prefix, name))
        elif isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            found.extend(_path_fields(info.annotation, (*prefix, name)))
    return found


_APP_PATH_FIELDS = _path_fields(AppConfig)


def _abspath(value: str | os.PathLike[str], base: Path) -> Path:
    """``value`` made absolute against ``base``; ``..`` is folded, symlinks are not followed."""
    path = Path(value).expanduser()
    return Path(os.path.normpath(path if path.is_absolute() else base / path))


def _short_repr(value: Any, secrets: Iterable[str] = ()) -> str:
    """``repr(value)``, redacted *before* it is cut short (a cut could split a URL before its ``@``)."""
    text = redact_text(repr(value), secrets)
    return text if len(text) <= _REPR_MAX else text[: _REPR_MAX - 3] + "..."


def _error_message(err: Mapping[str, Any], secrets: Iterable[str] = ()) -> str:
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden" and loc:
        name = str(loc[-1])
        message = f"unknown field {name!r}"
        close = difflib.get_close_matches(name, _fields_at(loc[:-1]), n=1)
        return f"{message} (did you mean {close[0]!r}?)" if close else message
    message = str(err["msg"])
    if err["type"] == "value_error":
        message = message.removeprefix("Value error, ")
    if err["type"] != "missing" and "input" in err and not isinstance(err["input"], Mapping | BaseModel):
        message += f" (got {_short_repr(err['input'], secrets)})"
    return message


# ----------------------------------------------------------------------------------------- file input


def _read_text(path: Path, file: str) -> str:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"cannot read file: {exc.strerror or exc}")]) from exc
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError([ConfigIssue(file, line, "", f"not valid UTF-8 text ({exc.reason})")]) from exc


def _duplicate_keys(node: yaml.Node, file: str) -> list[ConfigIssue]:
    """PyYAML silently keeps the last of duplicate keys; a config with them is almost always a mistake."""
    issues: list[ConfigIssue] = []
    stack: list[tuple[yaml.Node, Loc]] = [(node, ())]
    seen_nodes: set[int] = set()
    while stack:
        current, loc = stack.pop()
        if id(current) in seen_nodes:  # aliases share nodes
            continue
        seen_nodes.add(id(current))
        if isinstance(current, yaml.MappingNode):
            first: dict[str, yaml.Node] = {}
            for key, value in current.value:
                if isinstance(key, yaml.ScalarNode) and key.tag != "tag:yaml.org,2002:merge":
                    if key.value in first:
                        issues.append(
                            ConfigIssue(
                                file,
                                _line(key),
                                _format_loc((*loc, key.value)),
                                f"duplicate key {key.value!r} (first at line {_line(first[key.value])})",
                            )
                        )
                    else:
                        first[key.value] = key
                    stack.append((value, (*loc, key.value)))
        elif isinstance(current, yaml.SequenceNode):
            stack.extend((item, (*loc, i)) for i, item in enumerate(current.value))
    return issues


def _parse_yaml(text: str, file: str) -> tuple[Any, yaml.Node | None, list[ConfigIssue]]:
    """Parse one YAML document into (data, node tree, duplicate-key issues); syntax errors raise."""
    loader = _YamlLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None, []
        issues = _duplicate_keys(node, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context_mark is not None:
            message += f" ({exc.context} at line {exc.context_mark.line + 1})"
        line = mark.line + 1 if mark is not None else None
        raise ConfigError([ConfigIssue(file, line, "", f"YAML syntax error: {message}")]) from exc
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue(file, None, "", f"YAML error: {exc}")]) from exc
    finally:
        loader.dispose()
    return data, node, issues


def _with_file_url(camera: Any, base: Path) -> Any:
    """A copy of a raw camera mapping whose plain relative file-path ``url`` is made absolute."""
    if not isinstance(camera, dict):
        return camera
    url = camera.get("url")
    try:
        is_path = isinstance(url, str) and bool(url.strip()) and not urlsplit(url).scheme
    except ValueError:  # e.g. a broken IPv6 host: the schema reports it
        is_path = False
    if is_path:
        camera = dict(camera)
        camera["url"] = str(_abspath(url, base))
    return camera


def _read_csv_inventory(text: str, file: str, base: Path) -> _Inventory:
    inv = _Inventory([], [], [])
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    header_line = 0
    rows = 0  # data rows seen, valid or not: a row's index in locations
    try:
        while True:
            start = reader.line_num + 1
            try:
                row = next(reader)
            except StopIteration:
                break
            if not row or all(not cell.strip() for cell in row) or row[0].lstrip().startswith("#"):
                continue
            cells = [cell.strip() for cell in row]
            if header is None:
                header, header_line = cells, start
                inv.issues.extend(_check_csv_header(header, file, header_line))
                if inv.issues:
                    return inv
                continue
            index, rows = rows, rows + 1
            if len(cells) != len(header):
                inv.issues.append(
                    ConfigIssue(
                        file,
                        start,
                        _format_loc(("cameras", index)),
                        f"row has {len(cells)} cells, the header (line {header_line}) has {len(header)}",
                    )
                )
                continue
            camera = {col: cell for col, cell in zip(header, cells, strict=True) if cell != ""}
            inv.cameras.append(_with_file_url(camera, base))
            inv.origins.append(_Origin(file, index, line=start))
    except csv.Error as exc:
        inv.issues.append(ConfigIssue(file, reader.line_num or None, "", f"CSV error: {exc}"))
    if header is None:
        inv.issues.append(
            ConfigIssue(file, None, "", f"empty CSV inventory: expected a header {','.join(CSV_COLUMNS)}")
        )
    return inv


def _check_csv_header(header: list[str], file: str, line: int) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    seen: set[str] = set()
    for col in header:
        if col in seen:
            issues.append(ConfigIssue(file, line, col, f"duplicate column {col!r}"))
        elif col not in CSV_COLUMNS:
            close = difflib.get_close_matches(col, CSV_COLUMNS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            note = " (zones need a YAML inventory)" if col == "zones" else ""
            issues.append(
                ConfigIssue(file, line, col, f"unknown column {col!r}{note} ({hint}columns: {', '.join(CSV_COLUMNS)})")
            )
        seen.add(col)
    issues.extend(
        ConfigIssue(file, line, col, f"missing required column {col!r}") for col in _CSV_REQUIRED if col not in seen
    )
    return issues


def _read_yaml_inventory(text: str, file: str, base: Path) -> _Inventory:
    data, root, issues = _parse_yaml(text, file)
    items_node: yaml.Node | None = root
    if isinstance(data, dict):
        for key in data:
            if key != "cameras":
                issues.append(
                    ConfigIssue(file, _node_line(root, (str(key),)), str(key), "unknown key (expected 'cameras')")
                )
        data, items_node = data.get("cameras"), _node_at(root, "cameras")
        if data is None:
            data = []
    elif data is None:
        data = []
    if not isinstance(data, list) or not isinstance(items_node, yaml.SequenceNode | None):
        issues.append(
            ConfigIssue(
                file,
                _line(items_node) if items_node is not None else None,
                "",
                "expected a list of cameras, or a mapping with a 'cameras' list",
            )
        )
        return _Inventory([], [], issues)
    nodes = items_node.value if isinstance(items_node, yaml.SequenceNode) else []
    origins = [_Origin(file, i, node=node) for i, node in enumerate(nodes)]
    return _Inventory([_with_file_url(c, base) for c in data], origins, issues)


def _read_inventory(path: Path, file: str) -> _Inventory:
    """Read a CSV (by ``.csv`` suffix) or YAML camera inventory; raises ConfigError only if unparsable."""
    text = _read_text(path, file)
    base = path.absolute().parent
    if path.suffix.lower() == ".csv":
        return _read_csv_inventory(text, file, base)
    return _read_yaml_inventory(text, file, base)


# ---------------------------------------------------------------------------------------- validation


def _duplicate_ids(cameras: Sequence[Any], origins: Sequence[_Origin]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    first: dict[Any, _Origin] = {}
    for camera, origin in zip(cameras, origins, strict=True):
        cam_id = camera.get("id") if isinstance(camera, dict) else None
        if not isinstance(cam_id, str | int) or isinstance(cam_id, bool):
            continue
        if cam_id in first:
            prev = first[cam_id]
            prev_line = prev.line_of(("id",))
            where = prev.file if prev_line is None else f"{prev.file}:{prev_line}"
            issues.append(
                ConfigIssue(
                    origin.file,
                    origin.line_of(("id",)),
                    _format_loc(("cameras", origin.index, "id")),
                    f"duplicate camera id {cam_id!r} (first defined at {where})",
                )
            )
        else:
            first[cam_id] = origin
    return issues


@dataclass
class _Context:
    """Everything needed to turn a pydantic error location into a file and line."""

    file: str
    root: yaml.Node | None
    origins: list[_Origin]
    overrides: dict[tuple[str, ...], str]
    secrets: set[str]

    def issue(self, err: Mapping[str, Any]) -> ConfigIssue:
        loc: Loc = tuple(err["loc"])
        message = _error_message(err, self.secrets)
        if len(loc) >= 2 and loc[0] == "cameras" and isinstance(loc[1], int) and loc[1] < len(self.origins):
            origin = self.origins[loc[1]]
            sub = loc[2:]
            return ConfigIssue(origin.file, origin.line_of(sub), _format_loc(("cameras", origin.index, *sub)), message)
        label = self._override_label(loc)
        if label is not None:
            return ConfigIssue(label, None, _format_loc(loc), message)
        return ConfigIssue(self.file, _node_line(self.root, loc), _format_loc(loc), message)

    def _override_label(self, loc: Loc) -> str | None:
        best: tuple[int, str] | None = None
        for path, label in self.overrides.items():
            if loc[: len(path)] == path and (best is None or len(path) > best[0]):
                best = (len(path), label)
        return best[1] if best else None


def _validate(data: dict[str, Any], ctx: _Context, issues: list[ConfigIssue]) -> AppConfig:
    """Validate ``data``; raise one ConfigError with ``issues`` plus every validation error."""
    try:
        config = AppConfig.model_validate(data)
    except ValidationError as exc:
        have_dupes = any(i.message.startswith("duplicate camera id") for i in issues)
        for err in exc.errors(include_url=False):
            if have_dupes and not err["loc"] and "duplicate camera id" in str(err["msg"]):
                continue  # already reported per camera, with both lines
            issues.append(ctx.issue(err))
        config = None
    if issues:
        rank: dict[str, int] = {}
        for origin_file in [ctx.file, *(o.file for o in ctx.origins)]:
            rank.setdefault(origin_file, len(rank))
        ordered = sorted(issues, key=lambda i: (rank.get(i.file, len(rank)), i.file, i.line or 0))
        raise ConfigError(
            replace(
                i,
                location=redact_text(i.location, ctx.secrets),
                message=redact_text(i.message, ctx.secrets),
            )
            for i in ordered
        )
    assert config is not None
    return config


def _secrets(cameras: Iterable[Any]) -> set[str]:
    found: set[str] = set()
    for camera in cameras:
        url = camera.get("url") if isinstance(camera, dict) else None
        password = url_password(url) if isinstance(url, str) else None
        if password:
            found.add(password)
    return found


def _set_dotted(data: dict[str, Any], dotted: str, value: object) -> str | None:
    """Set ``a.b.c`` in nested raw mappings (copying them: YAML aliases may share dicts); error or None."""
    parts = dotted.split(".")
    if not all(parts):
        return f"invalid override key {dotted!r}"
    if parts[0] == "cameras":
        return "cameras cannot be overridden (use cameras_file)"
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = {}
        elif not isinstance(child, dict):
            return f"cannot set {dotted!r}: {'.'.join(parts[: i + 1])} is not a mapping"
        else:
            child = dict(child)
        node[part] = child
        node = child
    node[parts[-1]] = value
    return None


def _absolute_paths(config: AppConfig, base: Path) -> AppConfig:
    """Resolve Path fields still relative (defaults, overrides) against ``base``."""
    for loc in _APP_PATH_FIELDS:
        owners: list[BaseModel] = [config]
        for part in loc[:-1]:
            owners.append(getattr(owners[-1], part))
        value = getattr(owners[-1], loc[-1])
        if value is None or Path(value).is_absolute():
            continue
        new: BaseModel = owners[-1].model_copy(update={loc[-1]: _abspath(value, base)})
        for owner, part in zip(reversed(owners[:-1]), reversed(loc[:-1]), strict=True):
            new = owner.model_copy(update={part: new})
        assert isinstance(new, AppConfig)
        config = new
    return config


# ---------------------------------------------------------------------------------------- public API


def load_cameras(path: Path) -> list[CameraConfig]:
    """Load a standalone camera inventory, validated as a whole (all bad rows in one ConfigError).

    Two formats, chosen by suffix:

    * ``.csv``: a header row naming columns from :data:`CSV_COLUMNS`
      (``id,url,district,purpose,analytics_fps,decode_mode,loop,nominal_resolution,nominal_fps``,
      any order; ``id`` and ``url`` required), then one camera per row. An empty cell means the
      field's default. Blank lines and lines starting with ``#`` are skipped. Zones cannot be
      written in CSV: cameras that need analytics zones belong in a YAML inventory. Errors name the
      line where the row starts.
    * anything else is YAML: a list of camera mappings, or a mapping with a single ``cameras:`` list.
      Errors name the line of the offending field.

    Relative file paths used as camera URLs resolve against the inventory's directory. Duplicate ids
    are reported at the later occurrence, naming the line of the first.

    Raises:
        ConfigError: every problem found in the file.
    """
    path = Path(path)
    file = str(path)
    inv = _read_inventory(path, file)
    issues = [*inv.issues, *_duplicate_ids(inv.cameras, inv.origins)]
    ctx = _Context(file, None, inv.origins, {}, _secrets(inv.cameras))
    return list(_validate({"cameras": inv.cameras}, ctx, issues).cameras)


def load_config(
    path: Path,
    *,
    overrides: Mapping[str, object] | None = None,
    env: Mapping[str, str] | None = None,
) -> AppConfig:
    """Load, merge and validate the application config; return it complete or raise ConfigError.

    Args:
        path: The YAML config. Besides the :class:`AppConfig` fields it may hold ``cameras_file:``,
            a CSV or YAML inventory (see :func:`load_cameras`; relative to the config's directory)
            whose cameras are appended to ``cameras``. Errors in it name that file and its lines.
        overrides: Dotted keys applied over the file and the environment, e.g.
            ``{"cluster.num_shards": 4}``; ``cameras_file`` may be given (relative to the working
            directory), ``cameras`` may not. Errors in them are reported as ``<overrides>``.
        env: Environment to read :data:`ENV_OVERRIDES` from (default ``os.environ``); a variable
            set to the empty string counts as unset. Errors name the variable, e.g.
            ``$CCTV_S3_BUCKET: storage.bucket: ...``.

    Returns:
        The validated config, with every path absolute.

    Raises:
        ConfigError: every problem found, in all files and overrides; nothing is half-applied.
    """
    path = Path(path)
    file = str(path)
    base = path.absolute().parent
    env = os.environ if env is None else env
    overrides = dict(overrides or {})

    data, root, issues = _parse_yaml(_read_text(path, file), file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError([ConfigIssue(file, _node_line(root, ()), "", f"expected a mapping at the top, got {kind}")])
    data = dict(data)

    # Paths written in the file are relative to the file.
    for loc in _APP_PATH_FIELDS:
        value: Any = data
        for part in loc:
            value = value.get(part) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            _set_dotted(data, ".".join(loc), _abspath(value, base))
    purpose_detectors = data.get("purpose_detectors")
    if isinstance(purpose_detectors, dict):  # a mapping of sections: their paths are file-relative too
        data["purpose_detectors"] = {
            k: {**v, "models_dir": _abspath(v["models_dir"], base)}
            if isinstance(v, dict) and isinstance(v.get("models_dir"), str) and v["models_dir"]
            else v
            for k, v in purpose_detectors.items()
        }

    # Cameras written in the config itself.
    cameras = data.get("cameras")
    cameras_node = _node_at(root, "cameras")
    if cameras is None:
        cameras = []
    elif not isinstance(cameras, list):
        issues.append(ConfigIssue(file, _node_line(root, ("cameras",)), "cameras", "expected a list of cameras"))
        cameras = []
    item_nodes = cameras_node.value if isinstance(cameras_node, yaml.SequenceNode) else []
    origins = [_Origin(file, i, node=n) for i, n in enumerate(item_nodes)]
    cameras = [_with_file_url(c, base) for c in cameras]

    # cameras_file: from the config (relative to it) or an override (relative to the working directory).
    inventory_value = data.pop("cameras_file", None)
    # `shown_base` keeps error messages in the caller's terms (relative if the config path was).
    inventory_label, inventory_line = file, _node_line(root, ("cameras_file",))
    inventory_base, shown_base = base, path.parent
    if "cameras_file" in overrides:
        inventory_value = overrides.pop("cameras_file")
        inventory_label, inventory_line = _OVERRIDES_LABEL, None
        inventory_base, shown_base = Path.cwd(), Path()
    if inventory_value is not None:
        if not isinstance(inventory_value, str | os.PathLike) or not str(inventory_value).strip():
            issues.append(
                ConfigIssue(
                    inventory_label,
                    inventory_line,
                    "cameras_file",
                    f"expected a file path (got {_short_repr(inventory_value)})",
                )
            )
        else:
            inv_path = Path(inventory_value).expanduser()
            shown = str(inv_path if inv_path.is_absolute() else shown_base / inv_path)
            if not inv_path.is_absolute():
                inv_path = inventory_base / inv_path
            if not inv_path.is_file():
                issues.append(ConfigIssue(inventory_label, inventory_line, "cameras_file", f"no such file: {shown}"))
            else:
                try:
                    inv = _read_inventory(inv_path, shown)
                except ConfigError as exc:
                    issues.extend(exc.issues)
                else:
                    issues.extend(inv.issues)
                    cameras.extend(inv.cameras)
                    origins.extend(inv.origins)
    data["cameras"] = cameras

    # Environment, then explicit overrides (these win).
    applied: dict[tuple[str, ...], str] = {}
    sources: list[tuple[str, str, object]] = [
        (f"${name}", dotted, env[name]) for name, dotted in ENV_OVERRIDES.items() if env.get(name)
    ]
    sources.extend((_OVERRIDES_LABEL, dotted, value) for dotted, value in overrides.items())
    for label, dotted, value in sources:
        problem = _set_dotted(data, dotted, value)
        if problem is not None:
            issues.append(ConfigIssue(label, None, dotted, problem))
        else:
            applied[tuple(dotted.split("."))] = label

    issues.extend(_duplicate_ids(cameras, origins))
    ctx = _Context(file, root, origins, applied, _secrets(cameras))
    config = _validate(data, ctx, issues)
    return _absolute_paths(config, Path.cwd())
