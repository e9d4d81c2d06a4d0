"""`sipvis train`: config, schedule, data pipeline, and (slow) real training runs on synthetic data:
it learns, it resumes exactly, and two torchrun processes average gradients like one process does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
import pytest
import torch
from click.testing import CliRunner

from sipvis.cli import cli
from sipvis.data.batch import PairCollate, PairSampler
from sipvis.data.synth import SynthConfig, generate
from sipvis.data.transforms import TrainTransform
from sipvis.data.ytvis import YTVISDataset, find_split
from sipvis.training import (
    WarmupStep,
    create_model,
    inference_state,
    load_config,
    param_groups,
    use_trainable_bn,
)
from sipvis.errors import SipvisError
from sipvis.model.config import SipMaskConfig
from sipvis.model.sipmask import SipMaskVIS

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "configs" / "synth_demo.toml"
YTVIS_1X = REPO / "configs" / "ytvis_r50_1x.toml"

# A tiny version of the demo configuration for the fast mechanics tests (the learning test uses the
# demo configuration itself).
TINY = ["model.max_size=[128, 72]", "data.scales=[[128, 72]]", "data.workers=0", "train.threads=1",
        "train.warmup_iters=2", "train.log_interval=1", "train.val_interval=0", "data.val_split=\"\""]


def _tiny_model_cfg(**kw) -> SipMaskConfig:
    base = dict(class_names=("a", "b", "c"), depth=18, style="pytorch", backbone_width=16, frozen_stages=-1,
                fpn_channels=32, head_channels=32, basis_channels=32, track_channels=32, num_bases=8)
    base.update(kw)
    return SipMaskConfig(**base)


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    """A small synthetic dataset at 128x72: train (6 videos x 5 frames) and valid (2 videos)."""
    root = tmp_path_factory.mktemp("synth")
    kw = dict(frames=5, width=128, height=72, clips=False, classes=("circle", "square", "triangle"))
    generate(root, SynthConfig(videos=6, seed=0, split="train", **kw))
    generate(root, SynthConfig(videos=2, seed=1, split="valid", **kw))
    return root


# ------------------------------------------------------------------------------------------ config


def test_presets_parse_with_the_papers_recipe():
    run = load_config(YTVIS_1X)
    t = run.train
    assert (t.epochs, t.steps, t.lr, t.momentum, t.weight_decay) == (12, [8, 11], 0.005, 0.9, 0.0001)
    assert (t.bias_lr_mult, t.bias_decay_mult, t.warmup_iters, t.warmup_ratio) == (2.0, 0.0, 1000, 0.0125)
    assert run.data.scales == [[640, 360]] and run.data.flip_prob == 0.5 and t.backbone_norm == "frozen"
    assert run.model == {"depth": 50, "style": "caffe", "frozen_stages": 1}
    demo = load_config(DEMO)
    assert demo.model["depth"] == 18 and demo.model["style"] == "pytorch" and demo.train.init == "scratch"


def test_overrides_and_config_errors(tmp_path):
    run = load_config(DEMO, ["train.lr=0.01", "data.scales=[[320, 180], [256, 144]]", "model.depth=34",
                             "train.output=out/x", "train.amp=false"])
    assert run.train.lr == 0.01 and run.data.scales == [[320, 180], [256, 144]] and run.model["depth"] == 34
    assert run.train.output == "out/x" and run.train.amp is False
    with pytest.raises(SipvisError, match="unknown \\[train\\] key 'lrr'"):
        load_config(DEMO, ["train.lrr=1"])
    with pytest.raises(SipvisError, match="must look like section.key=value"):
        load_config(DEMO, ["train.lr"])
    with pytest.raises(SipvisError, match="train.lr must be a number|\\[train\\] lr must be a number"):
        load_config(DEMO, ["train.lr=fast"])
    with pytest.raises(SipvisError, match="unknown \\[model\\] key 'depht'"):
        load_config(DEMO, ["model.depht=18"])
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nlr = 1")
    with pytest.raises(SipvisError, match="not valid TOML"):
        load_config(bad)
    with pytest.raises(SipvisError, match="config not found"):
        load_config(tmp_path / "missing.toml")


def test_a_named_config_without_output_writes_under_runs(tmp_path):
    """`sipvis train my.toml` writes to runs/my unless the file or an override names the output."""
    config = tmp_path / "my.toml"
    config.write_text("[train]\niters = 1\n")
    assert load_config(config, output_from_name=True).train.output == str(Path("runs") / "my")
    assert load_config(config, ['train.output="x"'], output_from_name=True).train.output == "x"
    assert load_config(config).train.output == "runs/train"  # the Python default
    config.write_text('[train]\noutput = "y"\n')
    assert load_config(config, output_from_name=True).train.output == "y"


def test_cli_errors_are_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["train", str(tmp_path / "nope.toml")])
    assert result.exit_code == 1 and result.output.strip() == f"Error: config not found: {tmp_path / 'nope.toml'}"
    result = runner.invoke(cli, ["train", str(DEMO), "data.root=\"" + str(tmp_path) + "\"", "--quiet"])
    assert result.exit_code == 1 and "no YouTube-VIS split 'train'" in result.output
    assert "Traceback" not in result.output


def test_unreadable_frame_in_a_worker_is_a_one_line_error(synth_root, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth_root, root)
    for jpg in (root / "train" / "JPEGImages").rglob("*.jpg"):
        jpg.write_bytes(b"not a jpeg")
    result = CliRunner().invoke(cli, ["train", str(DEMO), f'data.root="{root}"', *TINY, "data.workers=1",
                                      "train.iters=2", "train.batch_size=2", f'train.output="{tmp_path / "out"}"',
                                      "--quiet"])
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: cannot read frame ") and lines[0].endswith(".jpg")


# ---------------------------------------------------------------------------------------- schedule


def test_warmup_and_steps():
    f = WarmupStep(warmup_iters=100, warmup_ratio=0.0125, step_points=[300, 400], gamma=0.1)
    assert f(0) == pytest.approx(0.0125)
    assert f(50) == pytest.approx(1 - 0.5 * (1 - 0.0125))
    assert f(100) == 1.0 and f(299) == 1.0
    assert f(300) == pytest.approx(0.1) and f(399) == pytest.approx(0.1) and f(400) == pytest.approx(0.01)


def test_param_groups_double_bias_lr_without_decay():
    model = SipMaskVIS(_tiny_model_cfg())
    run = load_config(DEMO, ["train.lr=0.01", "train.weight_decay=0.0001"])
    groups = param_groups(model, run.train)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(names[id(p)].endswith(".bias") for p in groups[1]["params"])
    assert not any(names[id(p)].endswith(".bias") for p in groups[0]["params"])
    assert (groups[0]["lr"], groups[0]["weight_decay"]) == (0.01, 0.0001)
    assert (groups[1]["lr"], groups[1]["weight_decay"]) == (0.02, 0.0)
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == trainable


# ------------------------------------------------------------------------------------ model pieces


def test_reference_frames_tracking_map_equals_the_full_head_on_them():
    """Training passes current and reference frames through the backbone as one batch and runs only the
    tracking branch on the reference half: that map must be what the full model computes for the
    reference frames alone (nothing may mix samples of a batch)."""
    torch.manual_seed(0)
    model = SipMaskVIS(_tiny_model_cfg()).eval()
    x = torch.randn(4, 3, 64, 96)
    with torch.no_grad():
        ref = model.head.track_map([f[2:] for f in model.features(x)[:3]])
        alone = model.head(model.features(x[2:]), with_track=True).track_feats
    assert ref.shape == alone.shape == (2, 32, 8, 12)
    assert torch.allclose(ref, alone, atol=1e-5)


def test_trainable_bn_folds_into_the_inference_model():
    torch.manual_seed(0)
    cfg = _tiny_model_cfg()
    model = SipMaskVIS(cfg)
    assert use_trainable_bn(model) == 20  # ResNet-18: stem + 16 in blocks + 3 downsample
    model.train()
    with torch.no_grad():
        for _ in range(3):  # move the running statistics away from their initial values
            model(torch.randn(2, 3, 64, 64) * 3 + 1)
    model.eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        expected = model(x).cls_logits[0]
        plain = SipMaskVIS(cfg).eval()
        plain.load_state_dict(inference_state(model))  # strict: same names, no extra keys
        got = plain(x).cls_logits[0]
    assert not torch.equal(plain.backbone.bn1.running_mean, torch.zeros(16))
    assert torch.allclose(got, expected, atol=1e-5)
    # frozen stages keep fixed statistics
    frozen = SipMaskVIS(_tiny_model_cfg(frozen_stages=1))
    assert use_trainable_bn(frozen) == 20 - 1 - 4


def test_init_from_an_original_coco_checkpoint(tmp_path):
    """The paper's fine-tuning start: an mmdet-v1 COCO SipMask (80 classes, no tracking branch) loads
    into a model with other classes; only the classifier and the tracking branch start fresh."""
    import importlib.util

    from conftest import REFERENCE, require
    from sipvis.checkpoint import convert_mmdet
    from sipvis.training import load_init_weights

    spec = importlib.util.spec_from_file_location("make_weights", require(REFERENCE / "make_weights.py"))
    make_weights = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(make_weights)
    manifest = json.loads((REFERENCE / "manifest.json").read_text())["state_dict"]
    state = make_weights.make_state_dict(manifest)
    coco = {k: v for k, v in state.items() if "track" not in k}  # track_convs, sipmask_track
    coco["bbox_head.fcos_cls.weight"] = torch.randn(80, 256, 3, 3) * 0.01
    coco["bbox_head.fcos_cls.bias"] = torch.full((80,), -4.6)
    torch.save({"state_dict": coco, "meta": {}}, tmp_path / "sipmask_r50_caffe_1x.pth")
    model = SipMaskVIS(SipMaskConfig(class_names=("a", "b", "c")))
    model.init_weights()
    fresh = load_init_weights(model, str(tmp_path / "sipmask_r50_caffe_1x.pth"))
    assert {k.split(".")[1] for k in fresh} == {"cls_logits", "track_tower", "track_fuse"}
    _, full, _ = convert_mmdet(state)
    loaded = model.state_dict()
    for key in ("backbone.layer3.5.conv2.weight", "neck.fpn_convs.4.weight", "head.mask_coeffs.weight",
                "head.feature_align.deform_conv.weight", "head.scales.2.scale"):
        assert torch.equal(loaded[key], full[key]), key
    assert loaded["head.cls_logits.weight"].shape == (3, 256, 3, 3)


# -------------------------------------------------------------------------------------------- data


def test_ytvis_pairs_ids_and_flip(synth_root):
    split = find_split(synth_root, "train")
    ann = json.loads(split.ann_file.read_text())
    ds = YTVISDataset(split.ann_file, split.image_dir, TrainTransform(scales=((128, 72),), flip_prob=0.5))
    assert ds.class_names == ("circle", "square", "triangle")
    seen_flip = set()
    for key in list(PairSampler(len(ds), seed=3))[:12]:
        s = ds[key]
        assert ds[key].info == s.info  # a sample key fixes the augmentation and the reference frame
        v = next(i for i, vid in enumerate(ds.videos) if vid["id"] == s.info["video_id"])
        frames_with_gt = set(ds.valid[v])
        assert s.info["ref_frame"] in frames_with_gt
        assert s.info["ref_frame"] != s.info["frame"] or len(frames_with_gt) == 1
        t = s.targets
        assert t.masks.shape[1:] == s.image.shape[1:] and t.masks.shape[0] == t.boxes.shape[0]
        # pids: instance i of the current frame is reference instance pids[i] - 1 (same track id)
        anns = [a for a in ann["annotations"] if int(a["video_id"]) == s.info["video_id"]]
        cur = [a["id"] for a in anns if a["bboxes"][s.info["frame"]] is not None]
        ref = [a["id"] for a in anns if a["bboxes"][s.info["ref_frame"]] is not None]
        assert t.pids.tolist() == [ref.index(i) + 1 if i in ref else 0 for i in cur]
        assert t.ref_boxes.shape[0] == len(ref)
        # boxes are the masks' inclusive extents, flipped or not
        for box, mask in zip(t.boxes.tolist(), t.masks.numpy()):
            ys, xs = np.nonzero(mask)
            assert [xs.min(), ys.min(), xs.max(), ys.max()] == pytest.approx(box, abs=1.01)
        seen_flip.add(s.info["flip"])
    assert seen_flip == {True, False}


def test_collate_pads_both_frames_to_one_size(synth_root):
    split = find_split(synth_root, "train")
    transform = TrainTransform(scales=((100, 50), (128, 72)), scale_mode="range")
    ds = YTVISDataset(split.ann_file, split.image_dir, transform)
    samples = [ds[(i, (0, 0, i))] for i in range(4)]
    batch = PairCollate(32)(samples)
    assert batch.images.shape == batch.ref_images.shape
    assert batch.images.shape[2] % 32 == 0 and batch.images.shape[3] % 32 == 0
    for i, s in enumerate(samples):
        h, w = s.image.shape[1:]
        assert torch.equal(batch.images[i, :, :h, :w], s.image)
        assert not batch.images[i, :, h:].any() and not batch.images[i, :, :, w:].any()


def test_sampler_shards_cover_the_epoch_and_resume():
    full = [k for k, _ in PairSampler(10, seed=1)]
    assert sorted(full) == list(range(10))
    r0 = list(PairSampler(10, seed=1, rank=0, world_size=3))
    r1 = list(PairSampler(10, seed=1, rank=1, world_size=3))
    r2 = list(PairSampler(10, seed=1, rank=2, world_size=3))
    assert len(r0) == len(r1) == len(r2) == 4
    assert {k for k, _ in r0 + r1 + r2} == set(range(10))
    assert len({seed for _, seed in r0 + r1 + r2}) == 12  # every item has its own augmentation seed
    s = PairSampler(10, seed=1)
    s.set_epoch(1)
    epoch1 = list(s)
    assert [k for k, _ in epoch1] != full
    s.set_start(4)
    assert list(s) == epoch1[4:] and len(s) == 6


def test_coco_dataset_reference_is_the_image(tmp_path):
    import cv2

    from sipvis.data.coco import COCODataset

    img = np.zeros((60, 80, 3), np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), img)
    rle = mask_utils.encode(np.asfortranarray(np.pad(np.ones((10, 20), np.uint8), ((5, 45), (30, 30)))))
    anns = {
        "images": [{"id": 7, "file_name": "a.png", "width": 80, "height": 60}],
        "categories": [{"id": 3, "name": "x"}, {"id": 9, "name": "y"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 9, "bbox": [10, 10, 20, 10], "iscrowd": 0, "area": 200,
             "segmentation": [[10, 10, 30, 10, 30, 20, 10, 20]]},
            {"id": 2, "image_id": 7, "category_id": 3, "bbox": [30, 5, 20, 10], "iscrowd": 0, "area": 200,
             "segmentation": {"size": [60, 80], "counts": rle["counts"].decode()}},
            {"id": 3, "image_id": 7, "category_id": 3, "bbox": [0, 0, 5, 5], "iscrowd": 1, "area": 25,
             "segmentation": [[0, 0, 5, 0, 5, 5]]},
        ],
    }
    (tmp_path / "ann.json").write_text(json.dumps(anns))
    ds = COCODataset(tmp_path / "ann.json", tmp_path, TrainTransform(scales=((160, 120),), flip_prob=0.0))
    s = ds[0]
    assert s.image.shape == (3, 120, 160) and ds.class_names == ("x", "y")
    assert s.targets.labels.tolist() == [1, 0] and s.targets.pids.tolist() == [1, 2]
    assert torch.equal(s.targets.ref_boxes, s.targets.boxes) and torch.equal(s.ref_image, s.image)
    assert s.targets.boxes[1].tolist() == pytest.approx([60, 10, 98, 28])  # [30,5,49,14] x2
    assert int(s.targets.masks[1].sum()) == 200 * 4


# ------------------------------------------------------------------------------- slow: real runs


def _run_cli(args: list[str]) -> None:
    result = CliRunner().invoke(cli, ["train", *args])
    assert result.exit_code == 0, result.output


def _state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.slow
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(synth_root, tmp_path):
    common = [str(DEMO), f'data.root="{synth_root}"', *TINY, "train.batch_size=2", "train.iters=4",
              "train.step_iters=[3]", "--quiet"]
    _run_cli([*common, f'train.output="{tmp_path / "a"}"'])
    # the same run stopped after 2 iterations, then resumed
    _run_cli([*common, f'train.output="{tmp_path / "b"}"', "train.iters=2"])
    shutil.copy(tmp_path / "b" / "checkpoints" / "last.pt", tmp_path / "after2.pt")
    _run_cli([*common, f'train.output="{tmp_path / "b"}"', "--resume"])
    a, b = _state(tmp_path / "a" / "model.safetensors"), _state(tmp_path / "b" / "model.safetensors")
    two = torch.load(tmp_path / "after2.pt", weights_only=False)
    assert two["iteration"] == 2
    assert a.keys() == b.keys()
    changed = [k for k in a if not torch.equal(a[k], two["model"][k])]
    assert len(changed) > 10  # iterations 3-4 did train
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-7), k
    log = [json.loads(line) for line in (tmp_path / "b" / "log.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in log if r["type"] == "train"] == [1, 2, 3, 4]
    # the final weights load as a sipvis checkpoint
    from sipvis.checkpoint import build_model

    model, _ = build_model(tmp_path / "a" / "model.safetensors")
    assert model.cfg.class_names == ("circle", "square", "triangle") and model.cfg.max_size == (128, 72)


_DDP_REFERENCE = """
import sys, torch
from sipvis.data.batch import PairCollate, PairSampler
from sipvis.training import (TrainingModel, WarmupStep, build_datasets, create_model, jitter_generator,
                                 load_config, param_groups)
from sipvis.model.losses import LossConfig, total_loss
from safetensors.torch import save_file

torch.set_num_threads(1)
run = load_config(sys.argv[1], sys.argv[3:])
tc = run.train
dataset, _ = build_datasets(run, run.model)
cfg, model, _ = create_model(run, dataset.class_names)
model.train()
tm = TrainingModel(model, LossConfig(ref_jitter=tc.ref_jitter))
opt = torch.optim.SGD(param_groups(model, tc), lr=tc.lr, momentum=tc.momentum)
sched = torch.optim.lr_scheduler.LambdaLR(opt, WarmupStep(tc.warmup_iters, tc.warmup_ratio, tc.step_iters, tc.gamma))
world, bs = 2, tc.batch_size
keys = [list(PairSampler(len(dataset), seed=tc.seed, rank=r, world_size=world)) for r in range(world)]
collate = PairCollate(cfg.size_divisor)
params = [p for p in model.parameters() if p.requires_grad]
for it in range(tc.iters):
    grads = [torch.zeros_like(p) for p in params]
    for r in range(world):  # what each process computes on its own shard
        batch = collate([dataset[k] for k in keys[r][it * bs:(it + 1) * bs]])
        opt.zero_grad()
        total_loss(tm(batch.images, batch.ref_images, batch.targets,
                      jitter_generator(tc.seed, it, r, torch.device("cpu")))).backward()
        for g, p in zip(grads, params):
            g += p.grad / world
    for g, p in zip(grads, params):
        p.grad = g
    opt.step()
    sched.step()
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, sys.argv[2])
"""


@pytest.mark.slow
def test_torchrun_two_processes_average_gradients_like_one_process(synth_root, tmp_path):
    if not shutil.which("torchrun", path=str(Path(sys.executable).parent)):
        pytest.skip("torchrun is not installed beside the interpreter")
    overrides = [f'data.root="{synth_root}"', *TINY, "train.batch_size=1", "train.iters=3", "train.lr=0.01",
                 "train.backbone_norm=\"frozen\"", "train.step_iters=[2]", "train.grad_clip=0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    out = tmp_path / "ddp"
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "sipvis.cli.train", str(DEMO), *overrides,
         f'train.output="{out}"', "--quiet", "--device", "cpu"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    script = tmp_path / "reference.py"
    script.write_text(_DDP_REFERENCE)
    ref_path = tmp_path / "reference.safetensors"
    proc = subprocess.run([sys.executable, str(script), str(DEMO), str(ref_path), *overrides],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp, ref = _state(out / "model.safetensors"), _state(ref_path)
    run = load_config(DEMO, overrides)
    _, init, _ = create_model(run, ("circle", "square", "triangle"))
    moved = 0
    for k, v in ref.items():
        assert torch.allclose(ddp[k], v, rtol=1e-4, atol=1e-6), k
        moved += int(not torch.allclose(v, init.state_dict()[k]))
    assert moved > 50  # the comparison is about trained weights, not the shared initialisation
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert log[0]["world_size"] == 2 and [r["iteration"] for r in log if r["type"] == "train"] == [1, 2, 3]


def _held_out_loss(model: SipMaskVIS, dataset: YTVISDataset) -> float:
    """Total loss of `model` (inference configuration, no jitter) on the first 8 pairs of a split."""
    from sipvis.training import TrainingModel
    from sipvis.model.losses import LossConfig, total_loss

    batch = PairCollate(32)([dataset[(i, (0, 0, i))] for i in range(8)])
    with torch.no_grad():
        losses = TrainingModel(model.eval(), LossConfig(ref_jitter=0.0))(batch.images, batch.ref_images, batch.targets)
    return float(total_loss(losses))


@pytest.mark.slow
def test_demo_config_learns_from_scratch(tmp_path):
    """300 iterations of the demo configuration (at 128x72, batch 4: about 2-4 minutes on 2 busy cores)
    on 12 synthetic videos of two classes. Measured on the development machine: held-out mask AP
    0.0 untrained -> 0.41 trained; held-out total loss 12.9 -> 1.2 (a factor of 10). The thresholds
    leave room for run-to-run and machine-to-machine differences."""
    from sipvis.checkpoint import build_model
    from sipvis.training import train, validate

    root = tmp_path / "data"
    kw = dict(frames=8, width=128, height=72, classes=("circle", "square"), clips=False, objects=(1, 3),
              object_size=(0.3, 0.6))
    generate(root, SynthConfig(videos=12, seed=0, split="train", **kw))
    generate(root, SynthConfig(videos=4, seed=1, split="valid", **kw))
    run = load_config(DEMO, [f'data.root="{root}"', "model.max_size=[128, 72]", "data.scales=[[128, 72]]",
                             "data.workers=0", "train.threads=1", "train.iters=300", "train.batch_size=4",
                             "train.warmup_iters=30", "train.step_iters=[]", "train.log_interval=20",
                             f'train.output="{tmp_path / "run"}"'])
    valid = find_split(root, "valid")
    held_out = YTVISDataset(valid.ann_file, valid.image_dir, TrainTransform(
        scales=((128, 72),), flip_prob=0.0, mean=tuple(run.model["pixel_mean"]), std=tuple(run.model["pixel_std"])))
    _, untrained, _ = create_model(run, ("circle", "square"))  # the initialisation train() starts from
    untrained_ap = validate(untrained, valid.ann_file, valid.image_dir, torch.device("cpu"))["AP"]
    untrained_loss = _held_out_loss(untrained, held_out)

    result = train(run)
    trained, _ = build_model(result.weights)
    trained_loss = _held_out_loss(trained, held_out)
    trained_ap = result.last_val["AP"]
    print(f"held-out mask AP {untrained_ap:.3f} -> {trained_ap:.3f}; loss {untrained_loss:.3f} -> {trained_loss:.3f}")
    assert untrained_ap < 0.02
    assert trained_ap > 0.15
    assert untrained_loss / trained_loss > 4.0
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    train_log = [r for r in log if r["type"] == "train"]
    assert train_log[0]["loss"] / train_log[-1]["loss"] > 2.0
    assert log[-1]["type"] == "val" and log[-1]["AP"] == trained_ap
