"""sipvis checkpoints (safetensors weights + a JSON config) and the converter from the original
mmdetection-v1 checkpoints (`{'state_dict', 'meta'}` .pth files).

A sipvis checkpoint is a pair: `NAME.safetensors` (tensors under sipvis parameter names) and
`NAME.json` ({"format": "sipvis-checkpoint", "version": 1, "model": SipMaskConfig.to_dict(), ...}).
The model never sees mmdet key names: `mmdet_key_to_sipvis` is the whole mapping.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from sipvis.errors import SipvisError
from sipvis.io.files import load_json, write_bytes_atomic, write_json_atomic
from sipvis.weights import DownloadProgress
from sipvis.model.config import COCO_CLASSES, YTVIS_2019_CLASSES, SipMaskConfig
from sipvis.model.families import coco_config, family_name

if TYPE_CHECKING:
    from sipvis.model.sipmask import SipMaskVIS

FORMAT_NAME = "sipvis-checkpoint"

# (pattern on the mmdet key, replacement), applied in order; the first match wins.
_MMDET_RULES: list[tuple[str, str]] = [
    (r"^backbone\.(.*)$", r"backbone.\1"),
    (r"^neck\.(lateral_convs|fpn_convs)\.(\d+)\.conv\.(weight|bias)$", r"neck.\1.\2.\3"),
    (r"^bbox_head\.cls_convs\.(\d+)\.(conv|gn)\.(.*)$", r"head.cls_tower.\1.\2.\3"),
    (r"^bbox_head\.reg_convs\.(\d+)\.(conv|gn)\.(.*)$", r"head.reg_tower.\1.\2.\3"),
    (r"^bbox_head\.track_convs\.(\d+)\.(conv|gn)\.(.*)$", r"head.track_tower.\1.\2.\3"),
    (r"^bbox_head\.fcos_cls\.(.*)$", r"head.cls_logits.\1"),
    (r"^bbox_head\.fcos_reg\.(.*)$", r"head.bbox_pred.\1"),
    (r"^bbox_head\.fcos_centerness\.(.*)$", r"head.centerness.\1"),
    (r"^bbox_head\.scales\.(\d+)\.scale$", r"head.scales.\1.scale"),
    (r"^bbox_head\.feat_align\.conv_offset\.(.*)$", r"head.feature_align.offset.\1"),
    (r"^bbox_head\.feat_align\.conv_adaption\.(.*)$", r"head.feature_align.deform_conv.\1"),
    (r"^bbox_head\.feat_align\.norm\.(.*)$", r"head.feature_align.norm.\1"),
    (r"^bbox_head\.sip_cof\.(.*)$", r"head.mask_coeffs.\1"),
    (r"^bbox_head\.sip_mask_lat0\.(.*)$", r"head.basis_fuse.\1"),
    (r"^bbox_head\.sip_mask_lat\.(.*)$", r"head.basis_out.\1"),
    (r"^bbox_head\.(sipmask_track|fovea_track)\.(.*)$", r"head.track_fuse.\2"),
    (r"^bbox_head\.convs_scoring\.(\d+)\.conv\.(.*)$", r"head.mask_scoring.convs.\1.\2"),
    (r"^bbox_head\.mask_scoring\.(.*)$", r"head.mask_scoring.out.\1"),
]

# Layers whose shape depends on the class set, and the tracking branch (absent from COCO checkpoints).
CLASS_DEPENDENT = ("head.cls_logits.", "head.mask_scoring.out.")
TRACKING_BRANCH = ("head.track_tower.", "head.track_fuse.")


def mmdet_key_to_sipvis(key: str) -> str | None:
    """Map one original parameter name to ours; None for keys we drop (BatchNorm's num_batches_tracked)."""
    if key.endswith("num_batches_tracked"):
        return None
    for pattern, repl in _MMDET_RULES:
        if re.match(pattern, key):
            return re.sub(pattern, repl, key).replace(".gn.", ".norm.")
    return key  # unknown keys pass through and are reported as unexpected


@dataclass
class LoadReport:
    """What did not fit when loading weights into a model."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mis_shaped: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mis_shaped)

    def summary(self, limit: int = 4) -> str:
        parts = []
        for label, keys in (("missing", self.missing), ("unexpected", self.unexpected),
                            ("mis-shaped", self.mis_shaped)):
            if keys:
                shown = ", ".join(keys[:limit]) + (f", ... (+{len(keys) - limit})" if len(keys) > limit else "")
                parts.append(f"{len(keys)} {label} ({shown})")
        return "; ".join(parts)


def read_mmdet_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    """Read an mmdet-v1 `.pth` -> (state_dict, meta). Only tensors and plain data are unpickled."""
    path = Path(path)
    if not path.is_file():
        raise SipvisError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        first = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else type(exc).__name__
        raise SipvisError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {first}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        state, meta = obj["state_dict"], obj.get("meta") or {}
    elif isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state, meta = obj, {}
    else:
        raise SipvisError(f"{path} is not an mmdetection checkpoint (expected a dict with 'state_dict')")
    return {k.removeprefix("module."): v for k, v in state.items()}, meta


def infer_config(state: dict[str, torch.Tensor], class_names: tuple[str, ...] | None = None) -> SipMaskConfig:
    """Model config from converted keys: ResNet depth from the number of stage-3 blocks, classes from
    the classification layer (40 -> YouTube-VIS 2019 names, 80 -> COCO), caffe style (the original's only
    choice), and the family (`model_family`)."""
    blocks3 = {int(m.group(1)) for k in state if (m := re.match(r"backbone\.layer3\.(\d+)\.", k))}
    depth = {6: 50, 23: 101}.get(len(blocks3))
    if depth is None or "head.cls_logits.weight" not in state:
        raise SipvisError("checkpoint is not a SipMask model: no ResNet-50/101 backbone or no classification layer")
    n_cls = state["head.cls_logits.weight"].shape[0]
    if class_names is None:
        known = {len(YTVIS_2019_CLASSES): YTVIS_2019_CLASSES, len(COCO_CLASSES): COCO_CLASSES}
        class_names = known.get(n_cls) or tuple(f"class_{i}" for i in range(n_cls))
    return model_family(state, depth, tuple(class_names))


def model_family(state: dict[str, torch.Tensor], depth: int, class_names: tuple[str, ...]) -> SipMaskConfig:
    """Which SipMask a converted state dict is, from its keys alone.

    A tracking branch, or towers of 2 + 3 convs (a COCO pre-training of SipMask-VIS): SipMask-VIS.
    Otherwise an image model (`sipvis.model.families.coco_config`): towers 3 + 4 the high-accuracy
    1333x800 family, others the real-time 544x544 one; GN in the head when the towers have norm keys;
    SipMask++ when the backbone has deformable convs or the re-scoring branch exists. Keys that do not fit
    the family are reported when the weights are loaded into it.
    """
    def count(tower: str) -> int:
        return len({m.group(1) for k in state if (m := re.match(rf"head\.{tower}\.(\d+)\.conv\.weight$", k))})

    towers = count("cls_tower"), count("reg_tower")
    if any(k.startswith(TRACKING_BRANCH) for k in state) or towers == (2, 3):
        return SipMaskConfig(class_names=class_names, depth=depth, style="caffe")
    norm = any(re.match(r"head\.(cls|reg)_tower\.\d+\.norm\.", k) for k in state)
    plus = any(".conv_offset." in k for k in state if k.startswith("backbone.")) or any(
        k.startswith("head.mask_scoring.") for k in state)
    return coco_config(depth, realtime=towers[1] != 4, head_norm=norm, plus=plus, class_names=class_names)


def rename_mmdet(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An original state dict under sipvis names (dropped keys left out, unknown keys kept as they are)."""
    renamed = {}
    for key, value in state.items():
        new = mmdet_key_to_sipvis(key)
        if new is not None:
            renamed[new] = value
    return renamed


def fit_state(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> LoadReport:
    """Copy every tensor of `state` that fits into `model` (freshly initialised) and report the rest.

    A layer of the class-dependent head or of the tracking branch that `state` lacks or holds in another
    shape keeps its fresh value and is listed in `report.reinitialised` (a COCO checkpoint fine-tuned to
    other classes); any other misfit is listed as missing, unexpected or mis-shaped for the caller to raise.
    """
    expected = model.state_dict()
    fresh = CLASS_DEPENDENT + TRACKING_BRANCH
    report = LoadReport()
    fitting = {}
    for key, value in state.items():
        if key not in expected:
            report.unexpected.append(key)
        elif expected[key].shape != value.shape:
            if key.startswith(fresh):
                report.reinitialised.append(key)
            else:
                report.mis_shaped.append(f"{key} {tuple(value.shape)} vs {tuple(expected[key].shape)}")
        else:
            fitting[key] = value
    for key in expected:
        if key not in state:
            (report.reinitialised if key.startswith(fresh) else report.missing).append(key)
    model.load_state_dict(fitting, strict=False)
    return report


def _load_mmdet_into(model, renamed: dict[str, torch.Tensor]) -> LoadReport:
    """`fit_state` for an original checkpoint already renamed: every misfit is an error."""
    report = fit_state(model, renamed)
    if not report.ok:
        raise SipvisError(f"checkpoint does not fit {family_name(model.cfg)} R{model.cfg.depth}: {report.summary()}")
    return report


def convert_mmdet(state: dict[str, torch.Tensor], target: SipMaskConfig | None = None
                  ) -> tuple[SipMaskConfig, dict[str, torch.Tensor], LoadReport]:
    """Convert an original state dict into a complete sipvis state dict for `target`.

    With `target` None the config is inferred from the checkpoint. When the checkpoint's classes differ
    from the target's (a COCO model fine-tuned to YouTube-VIS) or it has no tracking branch, those layers
    are freshly initialised and listed in `report.reinitialised`; any other mismatch is an error.
    """
    from sipvis.model.sipmask import SipMaskVIS

    renamed = rename_mmdet(state)
    source_cfg = infer_config(renamed)
    cfg = target or source_cfg
    model = SipMaskVIS(cfg)
    model.init_weights()
    report = _load_mmdet_into(model, renamed)
    return cfg, model.state_dict(), report


def checkpoint_paths(path: str | Path) -> tuple[Path, Path]:
    """`x`, `x.safetensors` or `x.json` -> (x.safetensors, x.json); a directory holding one pair -> that pair."""
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("*.safetensors"))
        if len(found) != 1:
            raise SipvisError(f"{path} must hold exactly one .safetensors checkpoint, found {len(found)}")
        path = found[0]
    base = path.with_suffix("") if path.suffix in (".safetensors", ".json") else path
    return base.with_name(base.name + ".safetensors"), base.with_name(base.name + ".json")


def save_checkpoint(path: str | Path, cfg: SipMaskConfig, state: dict[str, torch.Tensor], **meta) -> Path:
    """Write `path.safetensors` + `path.json`; returns the .safetensors path."""
    from safetensors.torch import save

    weights_path, config_path = checkpoint_paths(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in state.items()}
    # each file appears whole or not at all; the config goes last, so a pair with a config is complete
    write_bytes_atomic(weights_path, save(tensors))
    write_json_atomic(config_path, {"format": FORMAT_NAME, "version": 1, "model": cfg.to_dict(), **meta}, indent=2)
    return weights_path


def load_checkpoint(path: str | Path) -> tuple[SipMaskConfig, dict[str, torch.Tensor], dict]:
    """Read a sipvis checkpoint -> (config, state_dict, metadata)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    weights_path, config_path = checkpoint_paths(path)
    if not weights_path.is_file():
        raise SipvisError(f"checkpoint not found: {weights_path}")
    if not config_path.is_file():
        raise SipvisError(f"checkpoint config not found: {config_path} (it must sit next to the .safetensors)")
    meta = load_json(config_path, "checkpoint config")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise SipvisError(f"{config_path} is not a sipvis checkpoint config (format != {FORMAT_NAME!r})")
    try:
        cfg = SipMaskConfig.from_dict(meta["model"])
    except (KeyError, TypeError, ValueError) as exc:
        raise SipvisError(f"{config_path} has an invalid model config: {exc}") from None
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SipvisError(f"{weights_path} is not a readable safetensors file (truncated or corrupt?): {exc}") from None
    return cfg, state, meta


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load with a readable report instead of PyTorch's multi-line error."""
    expected = model.state_dict()
    report = LoadReport(
        missing=[k for k in expected if k not in state],
        unexpected=[k for k in state if k not in expected],
        mis_shaped=[f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in state.items()
                    if k in expected and expected[k].shape != v.shape],
    )
    if not report.ok:
        raise SipvisError(f"{source} does not fit the model: {report.summary()}")
    model.load_state_dict(state)


def load_weights(spec: str | Path, progress: DownloadProgress | None = None) -> tuple[SipMaskConfig, dict[str, torch.Tensor]]:
    """Any `--weights` value (registry name, URL, sipvis checkpoint, original .pth) -> (config, state_dict).

    Original mmdet-v1 files are converted on first use; the result is cached beside them
    (`<file>.sipvis.safetensors/.json`) so later runs load safetensors directly.
    """
    from sipvis.weights import resolve_weights

    resolved = resolve_weights(str(spec), progress=progress)
    if resolved.format == "sipvis":
        cfg, state, _ = load_checkpoint(resolved.path)
        return cfg, state
    converted, converted_config = checkpoint_paths(resolved.path.with_name(resolved.path.name + ".sipvis"))
    if (converted.exists() and converted_config.exists()
            and converted.stat().st_mtime >= resolved.path.stat().st_mtime):
        try:
            cfg, state, _ = load_checkpoint(converted)
            return cfg, state
        except SipvisError:
            pass  # a damaged cache: convert again and rewrite it
    state, _ = read_mmdet_checkpoint(resolved.path)
    cfg, state, _ = convert_mmdet(state, _registry_family(resolved.name))
    try:
        save_checkpoint(converted, cfg, state, source=str(resolved.path))
    except SipvisError:
        pass  # a read-only location only costs a conversion next time
    return cfg, state


def _registry_family(name: str | None) -> SipMaskConfig | None:
    """The config a registry entry's `config` names (the family its file must be), or None."""
    from sipvis.model.families import OFFICIAL_CONFIGS, official_config
    from sipvis.weights import find_entry

    entry = find_entry(name) if name else None
    if entry is None or not entry.config:
        return None
    if entry.config not in OFFICIAL_CONFIGS:
        raise SipvisError(f"registry entry '{name}' names an unknown config '{entry.config}' "
                          f"(known: {', '.join(OFFICIAL_CONFIGS)})")
    return official_config(entry.config)


def build_model(weights: str | Path, *, overrides: dict | None = None, target: SipMaskConfig | None = None,
                progress: DownloadProgress | None = None) -> tuple[SipMaskVIS, LoadReport]:
    """The one way from a `--weights` value to a model: registry name, URL, sipvis checkpoint or original
    mmdet-v1 `.pth` (converted and cached on first use, see `load_weights`).

    Args:
        weights: the `--weights` value.
        overrides: config fields to change (e.g. `score_thr`, `max_per_img`), applied to the
            checkpoint's config, or to `target`'s.
        target: the config to build instead of the checkpoint's (fine-tuning, e.g. a COCO checkpoint to
            other classes): a fresh `init_weights` model that takes every tensor that fits; the
            class-dependent layers and the tracking branch that do not are left fresh and listed in
            `report.reinitialised`. Anything else that does not fit is a `SipvisError` naming the keys.
        progress: told how a download goes (`sipvis.weights.DownloadProgress`); None: silently.

    Returns:
        (model in eval mode on the CPU, load report).
    """
    from sipvis.model.sipmask import SipMaskVIS

    if target is not None:
        return _build_for_target(weights, replace(target, **(overrides or {})), progress)
    cfg, state = load_weights(weights, progress=progress)
    model = SipMaskVIS(replace(cfg, **(overrides or {})))
    load_state_into(model, state, str(weights))
    return model.eval(), LoadReport()


def _build_for_target(weights: str | Path, cfg: SipMaskConfig, progress: DownloadProgress | None) -> tuple[SipMaskVIS, LoadReport]:
    """`build_model` with a target config: the checkpoint's tensors that fit in a fresh `cfg` model.
    Original checkpoints are converted for `cfg` directly (no cache: the cache holds the inferred config)."""
    from sipvis.model.sipmask import SipMaskVIS
    from sipvis.weights import resolve_weights

    resolved = resolve_weights(str(weights), progress=progress)
    original = resolved.format != "sipvis"
    if original:
        state = rename_mmdet(read_mmdet_checkpoint(resolved.path)[0])
        infer_config(state)  # another architecture fails here, with its own message
    else:
        state = load_checkpoint(resolved.path)[1]
    model = SipMaskVIS(cfg)
    model.init_weights()  # the values of the layers that do not fit
    if original:
        return model.eval(), _load_mmdet_into(model, state)
    report = fit_state(model, state)
    bad = set(report.missing) | {entry.split(" ", 1)[0] for entry in report.mis_shaped}
    if bad:  # keys the checkpoint has and the model does not are ignored
        bad_keys = [k for k in model.state_dict() if k in bad]
        raise SipvisError(f"{weights} does not fit the model: {len(bad_keys)} missing or mis-shaped keys "
                          f"({', '.join(bad_keys[:3])})")
    return model.eval(), report
