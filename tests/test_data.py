"""CIFAR-10 loading (python batches, image folders, the md5 check, the decode cache), batch
augmentation, normalisation and the classification metrics."""
import os
import pickle
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cuconv.apps import data as cdata
from cuconv.apps.metrics import classification_report, confusion_matrix, format_report

CLASSES = cdata.CIFAR10_CLASSES


def synthetic_images(n: int, seed: int, num_classes: int = 10):
    """uint8 (n, 3, 32, 32) images whose mean colour depends on the label, so a small CNN learns
    them in a few steps; labels cycle through the classes."""
    g = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    palette = np.random.default_rng(1234).integers(20, 236, size=(num_classes, 3))
    noise = g.integers(-20, 21, size=(n, 3, 32, 32))
    images = np.clip(palette[labels][:, :, None, None] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def write_python_batches(root: Path, per_batch: int = 20, test: int = 40, seed: int = 0) -> Path:
    """Fake data_batch_1..5 and test_batch in the official pickle layout (bytes keys, rows of
    3072 channel-major values)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        images, labels = synthetic_images(test if name == "test_batch" else per_batch, seed + i)
        with open(root / name, "wb") as f:
            pickle.dump({b"data": images.reshape(len(images), -1), b"labels": labels.tolist(),
                         b"batch_label": name.encode()}, f)
    with open(root / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES]}, f)
    return root


def write_image_folder(root: Path, train_per_class: int = 3, test_per_class: int = 2, fmt: str = "png",
                       size: int = 32, seed: int = 0) -> Path:
    """DIR/{train,test}/<class>/NNNN.<fmt> holding synthetic_images."""
    from PIL import Image
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = synthetic_images(per_class * len(CLASSES), seed + (split == "test"))
        for k, (img, label) in enumerate(zip(images, labels)):
            d = root / split / CLASSES[label]
            d.mkdir(parents=True, exist_ok=True)
            im = Image.fromarray(img.transpose(1, 2, 0))
            if size != 32:
                im = im.resize((size, size), Image.NEAREST)
            im.save(d / f"{k:04d}.{fmt}")
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Decode caches go to the test's own directory, never the user's."""
    monkeypatch.setenv("CUCONV_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CUCONV_DATA", raising=False)


# ----------------------------------------------------------------------------------- python batches

@pytest.mark.parametrize("nested", [False, True])
def test_python_batches_round_trip(tmp_path, nested):
    root = tmp_path / "cifar"
    write_python_batches(root / cdata.CIFAR10_BATCH_DIR if nested else root, per_batch=8, test=6)
    ds = cdata.load_cifar10(root, download=False)
    assert ds.classes == list(CLASSES)
    assert ds.train.images.shape == (40, 3, 32, 32) and ds.train.images.dtype == torch.uint8
    assert ds.test.images.shape == (6, 3, 32, 32)
    expected = np.concatenate([synthetic_images(8, i)[0] for i in range(5)])
    assert torch.equal(ds.train.images, torch.from_numpy(expected))
    assert torch.equal(ds.test.labels, torch.from_numpy(synthetic_images(6, 5)[1]))


def test_data_from_environment(tmp_path, monkeypatch):
    write_python_batches(tmp_path / "env", per_batch=4, test=4)
    monkeypatch.setenv("CUCONV_DATA", str(tmp_path / "env"))
    assert len(cdata.load_cifar10(download=False).train) == 20


# ------------------------------------------------------------------------------------ image folders

def test_image_folder_png_exact_and_cached(tmp_path):
    root = write_image_folder(tmp_path / "imgs", train_per_class=2, test_per_class=1)
    ds = cdata.load_cifar10(root, download=False, workers=2)
    assert ds.classes == sorted(CLASSES)
    assert ds.train.images.shape == (20, 3, 32, 32) and len(ds.test) == 10
    # PNG is lossless: pixels come back exactly, in class-then-file order.
    images, labels = synthetic_images(20, 0)
    order = sorted(range(20), key=lambda k: (CLASSES[labels[k]], k))
    assert torch.equal(ds.train.images, torch.from_numpy(images[order]))
    assert [ds.classes[i] for i in ds.train.labels.tolist()] == [CLASSES[labels[k]] for k in order]
    caches = list((tmp_path / "cache").glob("imagefolder-*.npz"))
    assert len(caches) == 1
    again = cdata.load_cifar10(root, download=False)
    assert "cached" in again.source and torch.equal(again.train.images, ds.train.images)
    # Another file changes the key: the tree is decoded again, not served stale.
    sorted((root / "train" / "cat").iterdir())[0].unlink()
    third = cdata.load_cifar10(root, download=False)
    assert "cached" not in third.source and len(third.train) == 19


def test_image_folder_jpeg_and_resize(tmp_path):
    root = write_image_folder(tmp_path / "imgs", train_per_class=1, test_per_class=1, fmt="jpg", size=64)
    ds = cdata.load_cifar10(root, download=False)
    assert ds.train.images.shape == (10, 3, 32, 32)
    images, labels = synthetic_images(10, 0)
    order = sorted(range(10), key=lambda k: CLASSES[labels[k]])
    # Upscaled by 2 (nearest), JPEG-compressed, then reduced back: close to the originals.
    diff = (ds.train.images.float() - torch.from_numpy(images[order]).float()).abs().mean()
    assert diff < 12, diff


def test_decoders_agree_with_pil(tmp_path):
    from PIL import Image
    root = write_image_folder(tmp_path / "imgs", train_per_class=1, test_per_class=1, fmt="jpg")
    files = sorted((root / "train").rglob("*.jpg"))
    ours = cdata.decode_images(files)
    pil = torch.stack([torch.from_numpy(np.asarray(Image.open(f).convert("RGB")).copy()).permute(2, 0, 1)
                       for f in files])
    assert (ours.int() - pil.int()).abs().max() <= 2  # libjpeg builds may round IDCT differently


def test_not_cifar_is_a_clear_error(tmp_path):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.txt").write_text("x")
    with pytest.raises(cdata.DataError, match="CUCONV_DATA"):
        cdata.load_cifar10(tmp_path / "junk", download=False)
    with pytest.raises(cdata.DataError, match="CUCONV_DATA"):
        cdata.load_cifar10(tmp_path / "junk")


# ------------------------------------------------------------------------------- md5 and download

def test_md5_check_rejects_a_corrupted_archive(tmp_path):
    f = tmp_path / "archive.tar.gz"
    f.write_bytes(b"cuconv" * 1000)
    good = cdata.md5sum(f)
    import hashlib
    assert good == hashlib.md5(b"cuconv" * 1000).hexdigest()
    cdata.check_md5(f, good)
    f.write_bytes(b"cuconv" * 999 + b"cuconX")  # one flipped byte
    with pytest.raises(cdata.DataError, match="md5"):
        cdata.check_md5(f, good)
    tv_utils = pytest.importorskip("torchvision.datasets.utils")
    assert not tv_utils.check_integrity(str(f), good)


def test_corrupted_cached_archive_is_rejected(tmp_path):
    # An archive already in the cache is checked before extraction, not trusted.
    (tmp_path / cdata.CIFAR10_ARCHIVE).write_bytes(b"not the real archive")
    with pytest.raises(cdata.DataError, match=cdata.CIFAR10_MD5):
        cdata.download_cifar10(tmp_path)


def test_offline_download_names_the_options(tmp_path, monkeypatch):
    tv_utils = pytest.importorskip("torchvision.datasets.utils")

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")
    monkeypatch.setattr(tv_utils, "download_url", offline)
    with pytest.raises(cdata.DataError) as e:
        cdata.load_cifar10(tmp_path / "empty")
    assert "--data" in str(e.value) and "CUCONV_DATA" in str(e.value)


# --------------------------------------------------------------------------- batches as tensors

def test_random_crop_flip_matches_per_image_reference():
    images = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(5)
    out = cdata.random_crop_flip(images, g, padding=4)
    g = torch.Generator().manual_seed(5)  # replay the same draws one image at a time
    oy = torch.randint(0, 9, (16,), generator=g)
    ox = torch.randint(0, 9, (16,), generator=g)
    flip = torch.rand(16, generator=g) < 0.5
    padded = torch.nn.functional.pad(images, (4, 4, 4, 4))
    for i in range(16):
        ref = padded[i, :, oy[i]:oy[i] + 32, ox[i]:ox[i] + 32]
        if flip[i]:
            ref = ref.flip(-1)
        assert torch.equal(out[i], ref), i
    assert out.is_contiguous() and out.dtype == torch.uint8
    assert flip.any() and not flip.all() and (oy != 4).any()  # the draws exercise both branches


def test_subset_is_class_mixed_and_fixed():
    split = cdata.Split(torch.zeros(1000, 3, 32, 32, dtype=torch.uint8), torch.arange(1000) // 100)
    a, b = split.subset(200), split.subset(200)
    assert torch.equal(a.labels, b.labels) and len(a) == 200
    assert len(a.labels.unique()) == 10
    assert split.subset(None) is split and split.subset(5000) is split


def test_normalizer():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 3, 1, 1)
    torch.testing.assert_close(cdata.Normalizer("scale")(x).flatten(), torch.tensor([0.0, 0.2, 1.0]))
    std = cdata.Normalizer("standard")(x).flatten().double()
    mean, sd = torch.tensor(cdata.CIFAR10_MEAN).double(), torch.tensor(cdata.CIFAR10_STD).double()
    torch.testing.assert_close(std, (torch.tensor([0, 51, 255]).double() / 255 - mean) / sd, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError):
        cdata.Normalizer("minmax")


# ------------------------------------------------------------------------------------------ metrics

def test_metrics_against_direct_counts():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 4, (500,), generator=g)
    # About 45% correct: precision + recall < 1 for some classes, which F1's denominator must handle.
    p = torch.where(torch.rand(500, generator=g) < 0.3, y, torch.randint(0, 4, (500,), generator=g))
    p[p == 3] = 2  # class 3 is never predicted: precision 0 by convention, not NaN
    names = ["a", "b", "c", "d"]
    cm = confusion_matrix(y, p, 4)
    assert int(cm.sum()) == 500
    for t in range(4):
        for q in range(4):
            assert int(cm[t, q]) == int(((y == t) & (p == q)).sum())
    r = classification_report(cm, names)
    assert r["accuracy"] == pytest.approx(float((y == p).double().mean()))
    f1s = []
    for k, name in enumerate(names):
        tp = int(((y == k) & (p == k)).sum())
        prec = tp / int((p == k).sum()) if (p == k).any() else 0.0
        rec = tp / int((y == k).sum())
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
        f1s.append(f1)
        assert r["per_class"][name]["precision"] == pytest.approx(prec)
        assert r["per_class"][name]["recall"] == pytest.approx(rec)
        assert r["per_class"][name]["f1"] == pytest.approx(f1)
        assert r["per_class"][name]["support"] == int((y == k).sum())
    assert r["per_class"]["d"]["precision"] == 0.0
    assert any(m["precision"] + m["recall"] < 1 for m in r["per_class"].values() if m["f1"] > 0)
    assert r["macro_f1"] == pytest.approx(sum(f1s) / 4)
    assert "accuracy" in format_report(r) and "macro" in format_report(r)


def test_metrics_against_sklearn():
    sklearn = pytest.importorskip("sklearn.metrics")
    g = torch.Generator().manual_seed(1)
    y = torch.randint(0, 5, (300,), generator=g)
    p = torch.where(torch.rand(300, generator=g) < 0.3, y, torch.randint(0, 5, (300,), generator=g))
    r = classification_report(confusion_matrix(y, p, 5), list("abcde"))
    assert r["macro_f1"] == pytest.approx(sklearn.f1_score(y, p, average="macro", zero_division=0))
