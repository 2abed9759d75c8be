"""mmdetection / mmyolo configs as users write them: top-level names and ``_base_`` inheritance.

- ``base_sizes=anchors, strides=strides`` (mmyolo's style) are resolved through the file's
  top-level assignments, and rewritten there.
- A config that sets no anchor generator itself (it inherits one through ``_base_``, or only
  overrides ``num_classes``) is read through mmengine's own ``Config.fromfile``, and written as
  an override that mmengine merges: ``model = dict(bbox_head=dict(<key>=dict(base_sizes=...)))``
  where ``<key>`` is the inherited head's (``anchor_generator`` in mmdetection's ``YOLOV3Head``,
  ``prior_generator`` in mmyolo).
- Relative ``_base_`` paths of a copied template are rewritten for the output's folder.
"""

from __future__ import annotations

import ast
import os
from typing import Any, Dict, List, Optional, Sequence, Tuple

#: The keys of a head's anchor generator: mmdetection's YOLOV3Head, then mmyolo's heads.
GENERATOR_KEYS = ("anchor_generator", "prior_generator")


def top_level_literals(tree: ast.Module) -> Dict[str, Tuple[ast.AST, Any]]:
    """``name -> (value node, value)`` of the module's top-level ``name = <literal>`` assignments
    (the last one wins, as when the file runs)."""
    out: Dict[str, Tuple[ast.AST, Any]] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = (node.value, ast.literal_eval(node.value))
            except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
                out.pop(node.targets[0].id, None)
    return out


def resolve(node: ast.AST, names: Dict[str, Tuple[ast.AST, Any]]) -> Tuple[Any, ast.AST]:
    """The literal value of ``node`` (a literal, or a top-level name bound to one) and the node
    that holds it in the file (the assignment's value for a name).

    Raises
    ------
    ValueError
        The value is neither (e.g. computed, or inherited from ``_base_``).
    """
    if isinstance(node, ast.Name):
        if node.id in names:
            value_node, value = names[node.id]
            return value, value_node
        raise ValueError(f"'{node.id}' is not a literal assigned at the top of the file")
    try:
        return ast.literal_eval(node), node
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        raise ValueError("not a literal list") from None


def has_base(text: str) -> bool:
    """Whether the config inherits (a top-level ``_base_`` assignment)."""
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    return any(
        isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets)
        for node in tree.body
    )


def load_generator(path: str) -> Tuple[str, Dict[str, Any], Optional[Tuple[int, int]]]:
    """Read ``model.bbox_head``'s anchor generator through mmengine's ``Config.fromfile``
    (``_base_`` chains included): ``(key, generator dict, image size or None)``.

    Raises
    ------
    ValueError
        mmengine is not installed, the config does not load, or it has no such generator.
    """
    try:
        from mmengine.config import Config
    except ImportError:
        raise ValueError(
            f"{path} sets no YOLOAnchorGenerator itself (it inherits one through _base_): reading it needs "
            "mmengine (pip install 'fastanchor[mmdet]')"
        ) from None
    try:
        cfg = Config.fromfile(path, import_custom_modules=False)
    except Exception as exc:  # mmengine raises many types for a broken chain; the message says which file
        raise ValueError(f"{path}: mmengine cannot load this config ({type(exc).__name__}: {exc})") from None
    head = (cfg.get("model") or {}).get("bbox_head") or {}
    for key in GENERATOR_KEYS:
        gen = head.get(key)
        if gen is not None and "base_sizes" in gen:
            return key, dict(gen), config_image_size(cfg)
    raise ValueError(
        f"{path}: model.bbox_head has no anchor_generator or prior_generator with base_sizes "
        "(after mmengine merged its _base_ chain)"
    )


def image_size_of(path: str) -> Optional[Tuple[int, int]]:
    """The config's image size through mmengine (see :func:`config_image_size`); None when
    mmengine is absent or the config does not load (the size is a hint, never required)."""
    try:
        from mmengine.config import Config

        return config_image_size(Config.fromfile(path, import_custom_modules=False))
    except Exception:
        return None


def merged_strides(path: str) -> Optional[List[Any]]:
    """The strides of the generator after mmengine merged the config's ``_base_`` chain, for a
    config that overrides ``base_sizes`` only; None when mmengine is absent or gives none."""
    try:
        return list(load_generator(path)[1].get("strides") or []) or None
    except ValueError:
        return None


def _train_pipeline(cfg: Any) -> List[Any]:
    """The training pipeline of a loaded config (through dataset wrappers such as RepeatDataset)."""
    dataset = (cfg.get("train_dataloader") or {}).get("dataset") or {}
    for _ in range(4):  # RepeatDataset / MultiImageMixDataset / ClassBalancedDataset hold a dataset
        if isinstance(dataset, dict) and "pipeline" in dataset:
            return list(dataset.get("pipeline") or [])
        dataset = dataset.get("dataset") if isinstance(dataset, dict) else None
    return list(cfg.get("train_pipeline") or [])


def _side(scale: Any) -> Optional[float]:
    """The long side of an mmcv ``scale`` (w, h) of two positive numbers, or None."""
    numbers = isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)
    return float(max(scale)) if numbers and all(v > 0 for v in scale) else None


def train_scale_range(path: str) -> Optional[Tuple[Tuple[float, float], str]]:
    """The random rescaling of a config's training pipeline, as a factor range against the size it
    tests at: a ``Resize``/``RandomResize`` step with two scales (multi-scale: ``scale=[(320, 320),
    (608, 608)]`` at a test size of 608 gives (0.526, 1.0)) or a ``ratio_range``. ``((lo, hi),
    what)``, or None when mmengine is absent, the config does not load or has no such step."""
    try:
        from mmengine.config import Config

        cfg = Config.fromfile(path, import_custom_modules=False)
    except Exception:
        return None
    test = config_image_size(cfg)
    for step in _train_pipeline(cfg):
        if not isinstance(step, dict) or "Resize" not in str(step.get("type", "")):
            continue
        kind = str(step.get("type"))
        ratio = step.get("ratio_range")
        scale = step.get("scale", step.get("img_scale"))
        if isinstance(ratio, (list, tuple)) and len(ratio) == 2 and all(isinstance(v, (int, float)) for v in ratio):
            base = _side(scale)
            f = base / max(test) if base is not None and test is not None else 1.0
            lo, hi = sorted(float(v) * f for v in ratio)
            return (lo, hi), f"{kind} ratio_range {list(ratio)} in {os.path.basename(path)}"
        if isinstance(scale, (list, tuple)) and len(scale) == 2 and test is not None:
            sides = [_side(v) for v in scale]
            if all(v is not None for v in sides):
                lo, hi = sorted(float(v) / max(test) for v in sides if v is not None)
                return (lo, hi), f"{kind} scales {[tuple(v) for v in scale]} at {max(test)} in {os.path.basename(path)}"
    return None


def config_image_size(cfg: Any) -> Optional[Tuple[int, int]]:
    """The image size a loaded mmdet/mmyolo config trains at: mmyolo's top-level ``img_scale``,
    else the test pipeline's ``Resize`` ``scale`` / ``img_scale``; None when there is none."""
    scale = cfg.get("img_scale")
    if scale is None:
        pipeline = ((cfg.get("test_dataloader") or {}).get("dataset") or {}).get("pipeline") or []
        for step in pipeline:
            if isinstance(step, dict) and "Resize" in str(step.get("type", "")):
                scale = step.get("scale", step.get("img_scale"))
                break
    if isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, int) for v in scale):
        return int(scale[0]), int(scale[1])
    return None


def rebase(text: str, tree: ast.Module, template: str, out: str) -> str:
    """``text`` with every relative ``_base_`` path rewritten relative to ``out``'s folder."""
    src_dir = os.path.dirname(os.path.abspath(template))
    dst_dir = os.path.dirname(os.path.abspath(out))
    if src_dir == dst_dir:
        return text
    spans: List[Tuple[ast.Constant, str]] = []
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_base_" for t in node.targets):
            items = node.value.elts if isinstance(node.value, (ast.List, ast.Tuple)) else [node.value]
            for item in items:
                if (
                    isinstance(item, ast.Constant)
                    and isinstance(item.value, str)
                    and "::" not in item.value
                    and not os.path.isabs(item.value)
                ):
                    new = os.path.relpath(os.path.join(src_dir, item.value), dst_dir).replace(os.sep, "/")
                    spans.append((item, repr(new)))
    return replace_nodes(text, spans)


def replace_nodes(text: str, replacements: Sequence[Tuple[ast.AST, str]]) -> str:
    """``text`` with each node's source span replaced (nodes must not overlap)."""
    lines = text.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    out = text
    for node, new in sorted(replacements, key=lambda r: (r[0].lineno, r[0].col_offset), reverse=True):
        a = offsets[node.lineno - 1] + _char_col(lines[node.lineno - 1], node.col_offset)
        b = offsets[node.end_lineno - 1] + _char_col(lines[node.end_lineno - 1], node.end_col_offset)
        out = out[:a] + new + out[b:]
    return out


def _char_col(line: str, byte_col: int) -> int:
    """ast gives UTF-8 byte columns; the character column of the same place."""
    return len(line.encode("utf-8")[:byte_col].decode("utf-8", errors="ignore"))


def override_text(key: str, base: str, strides: str, base_path: str, header: Optional[str]) -> str:
    """A config that inherits ``base_path`` and overrides only the head's anchor generator."""
    out = [f"# {header}\n"] if header else []
    out.append(f"_base_ = {base_path!r}\n\n")
    out.append(
        f"model = dict(\n    bbox_head=dict(\n        {key}=dict(\n"
        f"            base_sizes={base},\n            strides={strides},\n        )))\n"
    )
    return "".join(out)
