"""The SipMask image models of the paper (COCO, SipMask-mmdetection) as `SipMaskConfig`s.

Three families, each a handful of config fields of the one model (`sipvis.model.sipmask.SipMaskVIS`):

    high-accuracy   GN head, towers 3 + 4, keep-ratio 1333x800, per-class greedy NMS (score_thr 0.05)
    real-time       towers 1 + 2, fixed 544x544 (ratio not kept), fast NMS (score_thr 0.1), GN or not
    SipMask++       real-time + DCNv1 in the conv2 of backbone stages 2-4 (every 3rd block) + mask re-scoring

All: 80 COCO classes, no tracking branch, nms_pre 1000, 100 detections, masks thresholded at 0.4.
"""

from __future__ import annotations

from sipvis.model.config import COCO_CATEGORY_IDS, COCO_CLASSES, SipMaskConfig

# The nine released configs (SipMask-mmdetection `configs/sipmask/`): (depth, real-time, GN head, SipMask++).
OFFICIAL_CONFIGS: dict[str, tuple[int, bool, bool, bool]] = {
    "sipmask_r50_caffe_fpn_gn_1x": (50, False, True, False),
    "sipmask_r50_caffe_fpn_gn_ms_2x": (50, False, True, False),
    "sipmask_r101_caffe_fpn_gn_ms_4x": (101, False, True, False),
    "sipmask_r50_caffe_fpn_ssd_6x": (50, True, False, False),
    "sipmask_r50_caffe_fpn_ssd_gn_10x": (50, True, True, False),
    "sipmask_r101_caffe_fpn_ssd_6x": (101, True, False, False),
    "sipmask_r101_caffe_fpn_ssd_gn_10x": (101, True, True, False),
    "sipmask++_r101_caffe_fpn_ssd_6x": (101, True, False, True),
    "sipmask++_r101_caffe_fpn_ssd_gn_10x": (101, True, True, True),
}


def coco_config(depth: int = 50, realtime: bool = True, head_norm: bool = True, plus: bool = False,
                class_names: tuple[str, ...] = COCO_CLASSES) -> SipMaskConfig:
    """The config of a SipMask COCO image model.

    Args:
        depth: ResNet depth (50 or 101).
        realtime: the 544x544 family (towers 1 + 2, fast NMS) instead of the 1333x800 one (towers 3 + 4,
            per-class NMS).
        head_norm: GroupNorm in the head (the high-accuracy family always has it).
        plus: SipMask++ (deformable backbone convs and mask re-scoring).
        class_names: the classes (category ids are COCO's when these are COCO's).
    """
    ids = COCO_CATEGORY_IDS if tuple(class_names) == COCO_CLASSES else ()
    common = dict(class_names=tuple(class_names), category_ids=ids, depth=depth, style="caffe", task="image",
                  head_norm=head_norm, nms_pre=1000, nms_iou=0.5, nms_top_k=200, max_per_img=100, mask_thr=0.4,
                  dcn_stages=(2, 3, 4) if plus else (), dcn_interval=3, mask_rescoring=plus)
    if realtime:
        return SipMaskConfig(cls_convs=1, reg_convs=2, max_size=(544, 544), resize="fixed", nms="fast",
                             score_thr=0.1, **common)
    return SipMaskConfig(cls_convs=3, reg_convs=4, max_size=(1333, 800), resize="keep_ratio", nms="per_class",
                         score_thr=0.05, **common)


def official_config(name: str) -> SipMaskConfig:
    """The config of one of the nine released checkpoints by its config name (`OFFICIAL_CONFIGS`)."""
    depth, realtime, gn, plus = OFFICIAL_CONFIGS[name]
    return coco_config(depth, realtime, gn, plus)


def family_name(cfg: SipMaskConfig) -> str:
    """A one-line description of the model family: 'SipMask-VIS', 'SipMask real-time (544x544, GN head)'..."""
    if cfg.task == "vis":
        return "SipMask-VIS (video, tracking branch)"
    kind = "SipMask++" if cfg.mask_rescoring or cfg.dcn_stages else "SipMask"
    size = "x".join(map(str, cfg.max_size))
    shape = f"fixed {size}" if cfg.resize == "fixed" else f"keep-ratio {size}"
    rate = "real-time" if cfg.resize == "fixed" else "high-accuracy"
    extras = [("GN head" if cfg.head_norm else "plain head")]
    if cfg.dcn_stages:
        extras.append(f"DCN in stages {','.join(map(str, cfg.dcn_stages))}")
    if cfg.mask_rescoring:
        extras.append("mask re-scoring")
    return f"{kind} {rate} image model ({shape}, {', '.join(extras)})"
