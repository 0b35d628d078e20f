"""Checks of data read from files a user hands in: calibrations, YAML, run directories.

A file is data, never trusted: a calibration with a negative or NaN coefficient would run to
exit 0 with durations that go backwards, a residual tree with out-of-range node indices would
end in an IndexError, and a nine-level YAML alias chain expands to gigabytes. Each is refused
here in one `ConfigError` line naming the file and the field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import yaml

from rllmsim import checks
from rllmsim.errors import ConfigError

T = TypeVar("T")
#: A YAML document whose aliases expand past this many nodes is refused before it is built.
MAX_YAML_NODES = 100_000


def calibration(doc: Mapping[str, Any], where: str, feature_names: tuple[str, ...]) -> None:
    """A regression calibration's numbers: overhead and coefficients finite and >= 0 (a step
    never takes negative time) and not all zero, and a residual tree whose arrays agree."""
    overhead = checks.number(doc.get("overhead_s"), f"{where}: field 'overhead_s'", minimum=0)
    coefficients = doc.get("coefficients")
    if not isinstance(coefficients, dict):
        raise ConfigError(f"{where}: field 'coefficients' must be an object of feature: seconds, got {coefficients!r}")
    total = overhead + sum(checks.number(v, f"{where}: field 'coefficients.{k}'", minimum=0)
                           for k, v in coefficients.items())
    if total <= 0:
        raise ConfigError(f"{where}: overhead_s and every coefficient are 0, so a step takes no time; recalibrate")
    profile = doc.get("profile")
    if not isinstance(profile, dict) or not isinstance(profile.get("metadata"), dict):
        raise ConfigError(f"{where}: field 'profile.metadata' must be an object (the profile's metadata)")
    if doc.get("residual") is not None:
        residual_tree(doc["residual"], f"{where}: field 'residual'", feature_names)


def residual_tree(tree: Any, where: str, feature_names: tuple[str, ...]) -> None:
    """A regression tree as tree_json writes it: equal-length arrays, children within the tree
    (-1 = leaf), feature indices within `features`, finite thresholds and values."""
    keys = ("features", "children_left", "children_right", "feature", "threshold", "value")
    if not isinstance(tree, dict) or any(not isinstance(tree.get(k), list) for k in keys):
        raise ConfigError(f"{where} must be an object with the lists {', '.join(keys)}")
    features = tree["features"]
    if not all(isinstance(f, str) and f in feature_names for f in features):
        raise ConfigError(f"{where}.features must name known features ({', '.join(feature_names)}), got {features!r}")
    n = len(tree["children_left"])
    if n == 0 or any(len(tree[k]) != n for k in keys[2:]):
        raise ConfigError(f"{where}: children_left, children_right, feature, threshold and value must have "
                          "the same non-zero length")
    for k in ("children_left", "children_right"):
        for v in tree[k]:
            checks.integer(v, f"{where}.{k}", minimum=-1, maximum=n - 1)
    for node, (left, feat) in enumerate(zip(tree["children_left"], tree["feature"])):
        if left != -1:
            checks.integer(feat, f"{where}.feature[{node}]", minimum=0, maximum=len(features) - 1)
    for k in ("threshold", "value"):
        for v in tree[k]:
            checks.number(v, f"{where}.{k}")


class _BoundedLoader(yaml.SafeLoader):
    """safe_load that refuses a document whose aliases expand past MAX_YAML_NODES nodes: safe
    loading shares aliased nodes, so the blow-up only comes later, in whoever walks the data."""

    def construct_document(self, node):  # noqa: D102 - PyYAML hook
        if _expanded_size(node, {}) > MAX_YAML_NODES:
            raise yaml.YAMLError(f"aliases expand past {MAX_YAML_NODES:,} nodes (an alias bomb?)")
        return super().construct_document(node)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """Nodes in the document with every alias expanded; memoized, so linear in the file."""
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = MAX_YAML_NODES + 1  # a cycle counts as too big
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(child, memo) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(_expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value)
    else:
        size = 1
    memo[key] = min(size, MAX_YAML_NODES + 1)
    return memo[key]


def load_yaml(text: str) -> Any:
    """yaml.safe_load with alias expansion bounded (raises yaml.YAMLError past the bound)."""
    return yaml.load(text, Loader=_BoundedLoader)  # noqa: S506 - a SafeLoader subclass


def read_file(path: Path, what: str, reader: Callable[[Path], T]) -> T:
    """`reader(path)`, with any failure to parse the file as one line naming it: a damaged
    Parquet or JSON file raises a zoo of types (OSError, ArrowInvalid, ValueError, ...)."""
    try:
        return reader(path)
    except ConfigError:
        raise
    except (OSError, ValueError, TypeError, KeyError, IndexError, AttributeError, yaml.YAMLError) as err:
        why = " ".join(str(err).split())[:200] or type(err).__name__
        raise ConfigError(f"{path}: not a readable {what} ({why}); rewrite or remove it") from None


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON file that must hold an object (a run's summary.json, a plan.json)."""
    data = read_file(path, what, lambda p: json.loads(p.read_text(encoding="utf-8")))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a {what} must hold a JSON object, got {type(data).__name__}; rewrite or remove it")
    return data


#: Columns `rllmsim report` draws from; a table without them is not a run's.
REQUEST_COLUMNS = ("request_id", "arrival_s", "first_scheduled_s", "first_token_s", "finish_s", "ttft_s", "e2el_s",
                   "prompt_tokens", "output_tokens", "dataset")
TIMELINE_COLUMNS = ("start_s", "end_s", "replica", "running", "waiting")
#: Parts of a run's summary.json that the report reads, and the JSON type each must have.
SUMMARY_OBJECTS = ("config", "requests", "kv", "stragglers")


def read_table(path: Path, what: str, columns: tuple[str, ...]) -> Any:
    """A Parquet table that must carry `columns`; a damaged or foreign file is one line."""
    import pandas as pd

    frame = read_file(path, f"{what} Parquet table", pd.read_parquet)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ConfigError(f"{path}: not a run's {what} table (no {', '.join(missing)} column); "
                          "rewrite it with `rllmsim simulate` or remove it")
    return frame


def read_run(directory: Path) -> tuple[dict[str, Any], Any, Any]:
    """A run directory's summary, requests and (optional) timeline, each checked for shape."""
    summary = read_json_object(directory / "summary.json", "run summary")
    for key in SUMMARY_OBJECTS:
        if key in summary and not isinstance(summary[key], dict):
            raise ConfigError(f"{directory / 'summary.json'}: field '{key}' must be an object, "
                              f"got {type(summary[key]).__name__}")
    for key in ("deployment", "workload", "cost_model"):
        if not isinstance(summary.get("config", {}).get(key, {}), dict):
            raise ConfigError(f"{directory / 'summary.json'}: field 'config.{key}' must be an object")
    requests = read_table(directory / "requests.parquet", "requests", REQUEST_COLUMNS)
    timeline_path = directory / "timeline.parquet"
    timeline = read_table(timeline_path, "timeline", TIMELINE_COLUMNS) if timeline_path.exists() else None
    return summary, requests, timeline
