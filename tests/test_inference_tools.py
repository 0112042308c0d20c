"""tools/evaluate.py, tools/predict.py and tools/export.py as a user runs them, on tiny checkpoints
in the format of tools/retrain.py."""
import json
import subprocess
import sys

import numpy as np
import onnxruntime
import pytest
import torch
from conftest import ROOT, load_tool
from fakes import write_fake_cifar10, write_fake_folder, write_retrain_checkpoint
from PIL import Image

from autoseg.cli import run_tool
from autoseg.data import build_dataset
from autoseg.data.cifar10 import CIFAR_MEAN, CIFAR_STD
from autoseg.data.cifar10 import CLASS_NAMES as CIFAR_CLASSES
from autoseg.data.cityscapes import CLASS_NAMES as CITYSCAPES_CLASSES
from autoseg.data.cityscapes import PALETTE as CITYSCAPES_PALETTE
from autoseg.data.synthetic import CLASS_NAMES, PALETTE, render_scene
from autoseg.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from autoseg.utils.errors import UserError
from autoseg.evaluation.test_time import predict_logits

NEVER_PREDICTED = CLASS_NAMES.index("person")
TINY_ARCH = {"path": [0, 1, 2, 1],  # down twice, then up: every kind of step of the paper's path
             "cell": {"blocks": [[["sep_conv_3x3", 0], ["dil_conv_3x3", 1]],
                                 [["skip_connect", 2], ["sep_conv_5x5", 1]]],
                      "concat": [2, 3]}}
EVAL_BATCH = 3


def _spread_classifier(path, model, classifier, never=None, centre=None):
    """Give the classifier large random weights and no bias (or the bias that zeroes the logits
    of the feature vector ``centre``), so that a fresh model's predictions vary from pixel to
    pixel or image to image (its bias alone would pick one class everywhere); the class
    ``never`` is never predicted. Saves the changed weights into the checkpoint at ``path``."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(classifier.weight.shape, generator=generator))
        classifier.bias.copy_(0.0 if centre is None else -classifier.weight @ centre)
        if never is not None:
            classifier.bias[never] = -1e4
    state = torch.load(path, weights_only=False)
    state["model"] = model.state_dict()
    torch.save(state, path)


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory):
    """A run directory with a small searched Auto-DeepLab network (F=2) for the 6 synthetic
    classes, configured for 6 validation scenes of 32x32; the model never predicts "person"."""
    run = tmp_path_factory.mktemp("segmentation_run")
    (run / "arch.json").write_text(json.dumps(TINY_ARCH))
    torch.manual_seed(0)
    model = write_retrain_checkpoint(run / "best.pt", str(run / "arch.json"), len(CLASS_NAMES), "segmentation",
                                     "synthetic", CLASS_NAMES, PALETTE.tolist(),
                                     {"dataset": "synthetic", "image_size": 32, "val_length": 6,
                                      "eval_batch_size": EVAL_BATCH}, filter_multiplier=2)
    _spread_classifier(run / "best.pt", model, model.head.classifier, never=NEVER_PREDICTED)
    return run, model


@pytest.fixture(scope="module")
def cifar_run(tmp_path_factory):
    """A tiny DARTS network checkpoint on a fake CIFAR-10 with 12 test images; returns the run,
    the model, the test images normalised by hand (N x 3 x 32 x 32) and their labels."""
    root = tmp_path_factory.mktemp("cifar_run")
    images, labels = write_fake_cifar10(root / "data", num_train=5, num_test=12)["test"]
    normalised = torch.from_numpy(((images / 255.0 - CIFAR_MEAN) / CIFAR_STD).transpose(0, 3, 1, 2)).float()
    torch.manual_seed(0)
    model = write_retrain_checkpoint(root / "run" / "best.pt", "darts-cifar", 10, "classification", "cifar10",
                                     CIFAR_CLASSES, [], {"dataset": "cifar10", "root": str(root / "data"),
                                                         "eval_batch_size": 5}, C=4, layers=3)
    # Noise images pool to nearly the same features: centre the classifier on them so that
    # their small differences decide the class.
    pooled = []
    hook = model.classifier.register_forward_hook(lambda module, inputs, output: pooled.append(inputs[0]))
    with torch.no_grad():
        model(normalised)
    hook.remove()
    _spread_classifier(root / "run" / "best.pt", model, model.classifier, centre=pooled[0].mean(0))
    return root / "run", model, normalised, labels


def _confusion(preds: np.ndarray, masks: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows: label, columns: prediction; pixels labelled 255 are left out."""
    keep = masks != 255
    counts = np.bincount(masks[keep] * num_classes + preds[keep], minlength=num_classes**2)
    return counts.reshape(num_classes, num_classes)


def _expected_metrics(cm: np.ndarray) -> dict:
    """mIoU, pixel accuracy and per-class IoU (in %, None for absent classes) of a confusion matrix."""
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    iou = [100.0 * cm[c, c] / union[c] if union[c] else None for c in range(len(cm))]
    return {"miou": np.mean([v for v in iou if v is not None]), "pixel_acc": 100.0 * np.trace(cm) / cm.sum(),
            "iou": dict(zip(CLASS_NAMES, iou))}


@pytest.fixture(scope="module")
def synthetic_predictions(segmentation_run):
    """The model's predictions and the labels of the 6 validation scenes, batched as the tool batches."""
    _, model = segmentation_run
    dataset = build_dataset("synthetic", None, "val", augment=False, image_size=32, length=6)
    images, masks = zip(*(dataset[i] for i in range(len(dataset))))
    with torch.no_grad():
        preds = [model(torch.stack(images[i:i + EVAL_BATCH])).argmax(1) for i in range(0, 6, EVAL_BATCH)]
    return torch.cat(preds).numpy(), torch.stack(masks).numpy()


def _assert_metrics(result: dict, expected: dict) -> None:
    """The tool's mIoU, pixel accuracy and per-class IoU equal the expected ones."""
    assert result["miou"] == pytest.approx(expected["miou"])
    assert result["pixel_acc"] == pytest.approx(expected["pixel_acc"])
    assert list(result["iou"]) == CLASS_NAMES
    for name, value in expected["iou"].items():
        assert result["iou"][name] == (None if value is None else pytest.approx(value)), name


def test_evaluate_segmentation_matches_a_numpy_confusion_matrix(tool, segmentation_run, synthetic_predictions,
                                                                capsys):
    run, _ = segmentation_run
    preds, masks = synthetic_predictions
    cm = _confusion(preds, masks, len(CLASS_NAMES))
    assert (cm.sum(0) > 0).sum() >= 3, "the test needs a model that predicts several classes"
    expected = _expected_metrics(cm)
    result = tool("evaluate")([str(run), "--device", "cpu"])
    assert (result["task"], result["dataset"], result["split"], result["images"]) == ("segmentation", "synthetic",
                                                                                       "val", 6)
    _assert_metrics(result, expected)
    assert result["iou"]["person"] == 0.0  # labelled in the scenes, never predicted
    table = capsys.readouterr().out
    assert f"mIoU {expected['miou']:.2f} %" in table and f"pixel accuracy {expected['pixel_acc']:.2f} %" in table
    for name, value in expected["iou"].items():
        assert any(line.split() == [name, f"{value:.2f}"] for line in table.splitlines()), name


def test_evaluate_json_is_one_line_and_max_batches_limits_the_images(tool, segmentation_run, synthetic_predictions,
                                                                    capsys):
    run, _ = segmentation_run
    preds, masks = synthetic_predictions
    result = tool("evaluate")([str(run / "best.pt"), "--json", "--max-batches", "1", "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and json.loads(lines[0]) == result
    assert result["images"] == EVAL_BATCH
    _assert_metrics(result, _expected_metrics(_confusion(preds[:EVAL_BATCH], masks[:EVAL_BATCH], len(CLASS_NAMES))))


def test_evaluate_on_another_dataset_shows_absent_classes_as_na(tool, segmentation_run, tmp_path, capsys):
    run, _ = segmentation_run
    write_fake_folder(tmp_path, num_classes=len(CLASS_NAMES) - 1)  # ids 0..4: no "person" (5) in the masks
    evaluate = tool("evaluate")
    result = evaluate([str(run), "--dataset", "folder", "--data-root", str(tmp_path), "--num-classes", "6",
                       "--batch-size", "1"])
    assert (result["dataset"], result["images"]) == ("folder", 3)
    assert result["iou"]["person"] is None
    present = [v for v in result["iou"].values() if v is not None]
    assert len(present) == 5 and result["miou"] == pytest.approx(np.mean(present))
    assert any(line.split() == ["person", "n/a"] for line in capsys.readouterr().out.splitlines())
    with pytest.raises(UserError, match="predicts 6 classes but folder has 5"):
        evaluate([str(run), "--dataset", "folder", "--data-root", str(tmp_path), "--num-classes", "5"])


def test_evaluate_classification_top1_matches_a_hand_count(tool, cifar_run, capsys):
    run, model, images, labels = cifar_run
    with torch.no_grad():
        predicted = model(images).argmax(1).numpy()
    assert len(set(predicted.tolist())) >= 2, "the test needs a model that predicts several classes"
    correct = int((predicted == labels).sum())
    result = tool("evaluate")([str(run), "--device", "cpu"])
    assert (result["task"], result["split"], result["images"]) == ("classification", "test", 12)
    assert result["acc"] == pytest.approx(100.0 * correct / 12)
    assert f"top-1 accuracy {100.0 * correct / 12:.2f} %" in capsys.readouterr().out


def _rgb(path) -> np.ndarray:
    """A PNG's pixels as RGB (save_png writes RGBA)."""
    with Image.open(path) as stored:
        return np.asarray(stored.convert("RGB"))


def test_predict_writes_a_palette_mask_and_an_overlay_per_image(tool, segmentation_run, tmp_path):
    run, model = segmentation_run
    inputs, out = tmp_path / "inputs", tmp_path / "out"
    (inputs / "nested").mkdir(parents=True)
    scene, _ = render_scene(33, 45, np.random.default_rng(1))
    Image.fromarray(scene).save(inputs / "street.png")
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (28, 40, 3), dtype=np.uint8)).save(inputs / "noise.jpg")
    Image.fromarray(scene).save(inputs / "nested" / "deeper.png")  # not searched
    (inputs / "notes.txt").write_text("not an image")
    out.mkdir()
    (out / "keep.txt").write_text("left alone")

    written = tool("predict")([str(run), str(inputs), "--out", str(out), "--alpha", "0.25", "--device", "cpu"])

    assert sorted(p.name for p in out.iterdir()) == ["keep.txt", "noise_mask.png", "noise_overlay.png",
                                                     "street_mask.png", "street_overlay.png"]
    assert written == {"masks": [str(out / "noise_mask.png"), str(out / "street_mask.png")],
                       "overlays": [str(out / "noise_overlay.png"), str(out / "street_overlay.png")]}
    for stem, size in (("street", (33, 45)), ("noise", (28, 40))):
        mask, overlay = _rgb(out / f"{stem}_mask.png"), _rgb(out / f"{stem}_overlay.png")
        assert mask.shape == overlay.shape == (*size, 3)
        assert {tuple(c) for c in mask.reshape(-1, 3)} <= {tuple(c) for c in PALETTE.tolist()}
    normalised = (scene / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        classes = model(torch.from_numpy(normalised.transpose(2, 0, 1)[None]).float()).argmax(1)[0].numpy()
    mask = _rgb(out / "street_mask.png")
    assert len(np.unique(classes)) >= 2 and np.array_equal(mask, PALETTE[classes])
    blended = 0.75 * scene.astype(float) + 0.25 * mask.astype(float)
    assert np.abs(_rgb(out / "street_overlay.png") - blended).max() <= 0.5 + 1e-6


def test_predict_rejects_bad_inputs_with_one_line_errors(tool, segmentation_run, cifar_run, tmp_path):
    run, _ = segmentation_run
    predict = tool("predict")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(UserError, match="no images in"):
        predict([str(run), str(tmp_path / "empty"), "--out", str(tmp_path / "out")])
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(UserError, match="cannot read image"):
        predict([str(run), str(tmp_path / "broken.png"), "--out", str(tmp_path / "out")])
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    with pytest.raises(UserError, match="classification model"):
        predict([str(cifar_run[0]), str(tmp_path / "ok.png"), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()

    done = subprocess.run([sys.executable, str(ROOT / "tools" / "predict.py"), str(run), str(tmp_path / "empty"),
                           "--out", str(tmp_path / "out")], capture_output=True, text=True, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("error: no images in") and len(done.stderr.strip().splitlines()) == 1


def test_predict_never_writes_into_the_folder_of_its_inputs(tool, segmentation_run, tmp_path):
    run, _ = segmentation_run
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("street.png", "street_mask.png"):  # an input named like the other's output
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(photos / name)
    before = {path.name: path.read_bytes() for path in photos.iterdir()}
    with pytest.raises(UserError, match=f"--out {photos} holds the input image {photos}/street"):
        tool("predict")([str(run), str(photos), "--out", str(photos)])
    with pytest.raises(UserError, match="holds the input image"):
        tool("predict")([str(run), str(photos / "street.png"), "--out", str(photos / ".." / "photos")])
    assert {path.name: path.read_bytes() for path in photos.iterdir()} == before


def test_unwritable_outputs_are_found_before_the_work(tool, segmentation_run, tmp_path, monkeypatch):
    run, _ = segmentation_run
    (tmp_path / "a_file").write_text("not a folder")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "ok.png")
    predicted = []
    monkeypatch.setattr(load_tool("predict"), "predict_mask", lambda *args: predicted.append(args))
    with pytest.raises(UserError, match=f"--out {tmp_path}/a_file/out cannot be written"):
        tool("predict")([str(run), str(tmp_path / "ok.png"), "--out", str(tmp_path / "a_file" / "out")])
    assert predicted == []
    export = load_tool("export")
    monkeypatch.setattr(export, "export_onnx", lambda *args: predicted.append(args))
    with pytest.raises(UserError, match=f"the folder of --onnx {tmp_path}/a_file cannot be written"):
        export.main([str(run), "--onnx", str(tmp_path / "a_file" / "model.onnx")])
    assert predicted == []


@pytest.mark.parametrize("flags,message", [
    (["--scales", "0.05"], r"scale 0.05 turns .*small.png of 16x16 pixels into 0x0: use scales of at least 0.0625"),
    (["--window", "1", "1"], r"window \[1, 1\] with stride \[1, 1\] cuts .*big.png \(40x60 at scale 1\) into 2,400 "
                             "windows, more than 1000"),
])
def test_predict_refuses_scales_and_windows_that_make_no_sense_before_writing(tool, segmentation_run, tmp_path,
                                                                              flags, message):
    run, _ = segmentation_run
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "big.png")
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(UserError, match=message):
        tool("predict")([str(run), str(tmp_path / "big.png"), str(tmp_path / "small.png"),
                         "--out", str(tmp_path / "out"), *flags])
    assert not (tmp_path / "out").exists()


def test_evaluate_batches_images_of_different_sizes(tool, segmentation_run, tmp_path):
    run, _ = segmentation_run
    write_fake_folder(tmp_path / "data", num_classes=len(CLASS_NAMES), sizes=((20, 30), (32, 24), (20, 30), (16, 16)))
    args = [str(run), "--dataset", "folder", "--data-root", str(tmp_path / "data"), "--num-classes", "6", "--json"]
    together = tool("evaluate")([*args, "--batch-size", "3"])
    one_by_one = tool("evaluate")([*args, "--batch-size", "1"])
    assert together["images"] == 4 and together["iou"] == one_by_one["iou"]
    assert together["loss"] == pytest.approx(one_by_one["loss"], rel=1e-5)


def test_an_error_in_a_data_loader_worker_is_one_line(segmentation_run, tmp_path, capsys):
    run, _ = segmentation_run
    state = torch.load(run / "best.pt", weights_only=False)
    state["config"]["data"]["num_workers"] = 2
    torch.save(state, tmp_path / "workers.pt")
    write_fake_folder(tmp_path / "data", num_classes=6, sizes=((16, 16),) * 3)
    mask = tmp_path / "data" / "val" / "masks" / "val_001.png"
    Image.fromarray(np.full((16, 16), 9, np.uint8)).save(mask)
    with pytest.raises(SystemExit) as exited:
        run_tool(load_tool("evaluate").main, [str(tmp_path / "workers.pt"), "--dataset", "folder", "--data-root",
                                              str(tmp_path / "data"), "--num-classes", "6", "--batch-size", "1"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"error: mask {mask} holds class id(s) 9 but num_classes=6: ids must be 0..5 "
                                       "or 255 (ignore); fix the mask or raise num_classes\n")


def _assert_onnx_matches(path, model, shapes) -> None:
    """The ONNX file's logits equal the model's (to 1e-4 of the largest logit) on random inputs."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    generator = torch.Generator().manual_seed(3)
    for shape in shapes:
        image = torch.randn(*shape, generator=generator)
        with torch.no_grad():
            expected = model(image).numpy()
        (got,) = session.run(None, {"image": image.numpy()})
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * max(1.0, np.abs(expected).max()), shape


def test_export_segmentation_with_dynamic_shapes_matches_pytorch(tool, segmentation_run, tmp_path):
    run, model = segmentation_run
    result = tool("export")([str(run), "--onnx", str(tmp_path / "seg.onnx"), "--height", "33", "--width", "45",
                             "--dynamic"])
    assert result["input_shape"] == ["batch", 3, "height", "width"]
    _assert_onnx_matches(tmp_path / "seg.onnx", model, [(1, 3, 33, 45), (2, 3, 24, 40)])


def test_export_classification_at_the_default_size_matches_pytorch(tool, cifar_run, tmp_path, monkeypatch):
    run, model = cifar_run[:2]
    result = tool("export")([str(run), "--onnx", str(tmp_path / "cls.onnx")])
    assert result["input_shape"] == [1, 3, 32, 32] and result["output_shape"] == [1, 10]
    _assert_onnx_matches(tmp_path / "cls.onnx", model, [(1, 3, 32, 32)])

    export = load_tool("export")
    monkeypatch.setattr(export, "RELATIVE_TOLERANCE", -1.0)  # every difference is too large
    with pytest.raises(UserError, match="onnxruntime and PyTorch disagree"):
        export.main([str(run), "--onnx", str(tmp_path / "strict.onnx")])


def test_evaluate_with_scales_and_flip_reports_the_protocol_and_scores_its_predictions(tool, segmentation_run,
                                                                                       capsys):
    run, model = segmentation_run
    dataset = build_dataset("synthetic", None, "val", augment=False, image_size=32, length=6)
    images, masks = (torch.stack(part) for part in zip(*(dataset[i] for i in range(len(dataset)))))
    with torch.no_grad():
        preds = torch.cat([predict_logits(model, images[i:i + EVAL_BATCH], scales=(0.75, 1.25), flip=True).argmax(1)
                           for i in range(0, 6, EVAL_BATCH)]).numpy()
    expected = _expected_metrics(_confusion(preds, masks.numpy(), len(CLASS_NAMES)))
    result = tool("evaluate")([str(run), "--json", "--device", "cpu", "--scales", "0.75", "1.25", "--flip",
                               "--window", "24", "32", "--stride", "8"])
    assert result["protocol"] == {"scales": [0.75, 1.25], "flip": True, "window": [24, 32], "stride": [8, 8]}
    assert json.loads(capsys.readouterr().out) == result
    averaged = tool("evaluate")([str(run), "--device", "cpu", "--scales", "0.75", "1.25", "--flip"])
    _assert_metrics(averaged, expected)
    assert averaged["protocol"]["window"] is None
    with pytest.raises(UserError, match="larger than window"):
        tool("evaluate")([str(run), "--window", "8", "8", "--stride", "9"])


def test_predict_trainid_writes_the_class_indices_of_any_dataset(tool, segmentation_run, tmp_path):
    run, model = segmentation_run
    scene, _ = render_scene(33, 45, np.random.default_rng(1))
    Image.fromarray(scene).save(tmp_path / "street.png")
    written = tool("predict")([str(run), str(tmp_path / "street.png"), "--out", str(tmp_path / "out"),
                               "--format", "trainid", "color", "--device", "cpu", "--flip"])
    assert written == {"trainids": [str(tmp_path / "out" / "street_trainIds.png")],
                       "masks": [str(tmp_path / "out" / "street_mask.png")]}
    normalised = (scene / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
    with torch.no_grad():
        classes = predict_logits(model, torch.from_numpy(normalised.transpose(2, 0, 1)[None]).float(),
                                 flip=True).argmax(1)[0].numpy()
    with Image.open(tmp_path / "out" / "street_trainIds.png") as stored:
        assert stored.mode == "L" and np.array_equal(np.asarray(stored), classes)
    assert np.array_equal(_rgb(tmp_path / "out" / "street_mask.png"), PALETTE[classes])


@pytest.fixture(scope="module")
def cityscapes_run(tmp_path_factory):
    """A small searched network checkpoint trained "on Cityscapes" (19 classes)."""
    run = tmp_path_factory.mktemp("cityscapes_run")
    (run / "arch.json").write_text(json.dumps(TINY_ARCH))
    torch.manual_seed(0)
    model = write_retrain_checkpoint(run / "best.pt", str(run / "arch.json"), 19, "segmentation", "cityscapes",
                                     CITYSCAPES_CLASSES, CITYSCAPES_PALETTE.tolist(), {"dataset": "cityscapes"},
                                     filter_multiplier=2)
    _spread_classifier(run / "best.pt", model, model.head.classifier)
    return run, model


# Train id -> Cityscapes label id, restated from the official table (cityscapesscripts' labels.py).
LABEL_IDS = [7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33]


def test_predict_labelid_writes_a_cityscapes_submission(tool, cityscapes_run, tmp_path):
    run, model = cityscapes_run
    cities = {"berlin": tmp_path / "test" / "berlin", "bonn": tmp_path / "test" / "bonn"}
    rng = np.random.default_rng(4)
    images = {}
    for city, folder in cities.items():
        folder.mkdir(parents=True)
        name = f"{city}_000001_000019_leftImg8bit.png"
        images[name] = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
        Image.fromarray(images[name]).save(folder / name)
    out = tmp_path / "submission"
    written = tool("predict")([str(run), *map(str, cities.values()), "--out", str(out), "--format", "labelid",
                               "--device", "cpu"])
    assert written == {"labelids": [str(out / "berlin_000001_000019_labelIds.png"),
                                    str(out / "bonn_000001_000019_labelIds.png")]}
    assert sorted(p.name for p in out.iterdir()) == ["berlin_000001_000019_labelIds.png",
                                                     "bonn_000001_000019_labelIds.png"]
    seen = set()
    for name, image in images.items():
        normalised = (image / 255.0 - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD)
        with torch.no_grad():
            train_ids = model(torch.from_numpy(normalised.transpose(2, 0, 1)[None]).float()).argmax(1)[0].numpy()
        with Image.open(out / name.replace("_leftImg8bit", "_labelIds")) as stored:
            label_ids = np.asarray(stored)
        assert stored.mode == "L" and label_ids.shape == (24, 40)
        assert np.array_equal(label_ids, np.array(LABEL_IDS)[train_ids])
        seen |= set(np.unique(train_ids).tolist())
    assert len(seen) >= 3, "the test needs a model that predicts several classes"
    # Written again into the same folder, the submission is overwritten in place.
    tool("predict")([str(run), *map(str, cities.values()), "--out", str(out), "--format", "labelid", "--device", "cpu"])


def test_predict_labelid_refuses_what_the_benchmark_would_reject(tool, cityscapes_run, segmentation_run, tmp_path):
    run, _ = cityscapes_run
    image = tmp_path / "aachen_000000_000019_leftImg8bit.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    predict = tool("predict")
    with pytest.raises(UserError, match="trained on synthetic: use --format trainid"):
        predict([str(segmentation_run[0]), str(image), "--out", str(tmp_path / "a"), "--format", "labelid"])
    with pytest.raises(UserError, match="ask for labelid alone"):
        predict([str(run), str(image), "--out", str(tmp_path / "b"), "--format", "labelid", "color"])
    (tmp_path / "photo.png").write_bytes(image.read_bytes())
    with pytest.raises(UserError, match="photo.png is not a Cityscapes image name"):
        predict([str(run), str(tmp_path / "photo.png"), "--out", str(tmp_path / "c"), "--format", "labelid"])
    stale = tmp_path / "d" / "old" / "aachen_000000_000019_leftImg8bit_mask.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"")
    with pytest.raises(UserError, match="another prediction of aachen_000000_000019"):
        predict([str(run), str(image), "--out", str(tmp_path / "d"), "--format", "labelid"])
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


def test_predict_refuses_two_inputs_whose_outputs_would_collide(tool, segmentation_run, tmp_path):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / folder / "frame.png")
    with pytest.raises(UserError, match="share the stem 'frame'"):
        tool("predict")([str(segmentation_run[0]), str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                         str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
