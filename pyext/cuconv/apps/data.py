"""CIFAR-10 for training: the official python release (downloaded once and md5-checked), or an
image-folder tree DIR/{train,test}/<class>/*.{jpg,png}. Images are decoded once and held as uint8
tensors (N, 3, 32, 32); an image-folder tree is cached as an .npz file keyed by the directory.
Batches are cut, augmented (random crop with padding, horizontal flip) and scaled as whole tensors."""
from __future__ import annotations

import hashlib
import os
import pickle
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_BATCH_DIR = "cifar-10-batches-py"
# Per-channel statistics of the official training set (for --normalize standard).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")
IMAGE_SIZE = 32


class DataError(RuntimeError):
    """The data could not be found, downloaded, verified or decoded; the message says what to do."""


def require(module: str, purpose: str):
    """Import an optional extra, or fail with a message that names the extra to install."""
    import importlib
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise DataError(f"{module} is needed {purpose}; install it with "
                        f"`pip install {module}` (or the extra: `pip install cuconv[train]`)") from e


def cache_dir() -> Path:
    """Where downloads and decoded-image caches go: $CUCONV_CACHE, else ~/.cache/cuconv."""
    return Path(os.environ.get("CUCONV_CACHE") or Path.home() / ".cache" / "cuconv")


def default_data_dir() -> Path:
    """The data directory when --data is not given: $CUCONV_DATA, else the cache directory."""
    env = os.environ.get("CUCONV_DATA")
    return Path(env) if env else cache_dir()


@dataclass
class Split:
    """One split held in memory: images uint8 (N, 3, 32, 32), labels int64 (N,)."""
    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self):
        return len(self.labels)

    def subset(self, limit: Optional[int], seed: int = 0) -> "Split":
        """A class-mixed subset of `limit` images (image folders are ordered by class, so the first
        N would be one class). The choice depends only on `seed` and the split size."""
        if limit is None or limit >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(self), generator=g)[:limit].sort().values
        return Split(self.images[idx], self.labels[idx])


@dataclass
class Dataset:
    train: Split
    test: Split
    classes: List[str]
    source: str  # a description for logs


# --------------------------------------------------------------------------------- md5, download

def md5sum(path: os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def check_md5(path: os.PathLike, expected: str) -> None:
    """Raise DataError unless the file's md5 is `expected` (a truncated or corrupted download)."""
    actual = md5sum(path)
    if actual != expected:
        raise DataError(f"{path}: md5 {actual} does not match the published {expected}; "
                        f"the file is corrupted or incomplete: delete it and run again")


def download_cifar10(root: Path) -> Path:
    """Download and extract the official python release into `root` (once), checking its md5.
    Returns the directory holding data_batch_1..5 and test_batch."""
    batches = root / CIFAR10_BATCH_DIR
    if _has_python_batches(batches):
        return batches
    root.mkdir(parents=True, exist_ok=True)
    archive = root / CIFAR10_ARCHIVE
    if not archive.exists():
        tv_utils = require("torchvision.datasets.utils", "to download CIFAR-10")
        try:
            # download_url checks the md5 itself and retries on a mismatch.
            tv_utils.download_url(CIFAR10_URL, str(root), CIFAR10_ARCHIVE, CIFAR10_MD5)
        except Exception as e:  # network errors come in many types (URLError, OSError, ...)
            if archive.exists():
                archive.unlink()
            raise DataError(
                f"could not download CIFAR-10 from {CIFAR10_URL} ({type(e).__name__}: {e}). "
                f"Offline? Point --data (or the CUCONV_DATA environment variable) at a directory "
                f"holding the python batches (data_batch_1..5, test_batch) or an image-folder tree "
                f"DIR/train/<class>/*.png, DIR/test/<class>/*.png") from e
    check_md5(archive, CIFAR10_MD5)
    with tarfile.open(archive, "r:gz") as tar:
        try:
            tar.extractall(root, filter="data")  # refuses paths that escape root
        except TypeError:  # Python < 3.10.12 / 3.11.4 has no filter argument
            tar.extractall(root)
    if not _has_python_batches(batches):
        raise DataError(f"{archive} did not contain {CIFAR10_BATCH_DIR}/data_batch_1..5, test_batch")
    return batches


# ------------------------------------------------------------------------------ python batches

_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))


def _has_python_batches(d: Path) -> bool:
    return all((d / name).is_file() for name in _TRAIN_BATCHES + ("test_batch",))


def _read_python_batch(path: Path):
    with open(path, "rb") as f:
        entry = pickle.load(f, encoding="bytes")
    data = entry.get(b"data", entry.get("data"))
    labels = entry.get(b"labels", entry.get("labels"))
    if data is None or labels is None:
        raise DataError(f"{path}: not a CIFAR-10 python batch (no 'data' and 'labels')")
    images = np.asarray(data, dtype=np.uint8).reshape(-1, 3, IMAGE_SIZE, IMAGE_SIZE)
    return images, np.asarray(labels, dtype=np.int64)


def load_python_batches(d: Path) -> Dataset:
    parts = [_read_python_batch(d / name) for name in _TRAIN_BATCHES]
    test_images, test_labels = _read_python_batch(d / "test_batch")
    classes = list(CIFAR10_CLASSES)
    meta = d / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as f:
            names = pickle.load(f, encoding="bytes").get(b"label_names")
        if names:
            classes = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    train = Split(torch.from_numpy(np.concatenate([p[0] for p in parts])),
                  torch.from_numpy(np.concatenate([p[1] for p in parts])))
    test = Split(torch.from_numpy(test_images), torch.from_numpy(test_labels))
    return Dataset(train, test, classes, f"python batches {d}")


# -------------------------------------------------------------------------------- image folders

def _is_image_folder(d: Path) -> bool:
    return (d / "train").is_dir() and (d / "test").is_dir()


def _list_image_folder(d: Path, classes: Optional[Sequence[str]] = None):
    """Files, labels and a fingerprint (names, sizes, times) of one split; classes are the sorted
    sub-directory names of train/. os.scandir: 60k files take well under a second."""
    if classes is None:
        classes = sorted(e.name for e in os.scandir(d) if e.is_dir())
    files, labels = [], []
    h = hashlib.sha1(str(d.resolve()).encode())
    for label, name in enumerate(classes):
        cdir = d / name
        if not cdir.is_dir():
            continue
        entries = sorted((e for e in os.scandir(cdir) if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES),
                         key=lambda e: e.name)
        for e in entries:
            st = e.stat()
            h.update(f"{name}/{e.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            files.append(cdir / e.name)
            labels.append(label)
    return list(classes), files, labels, h.hexdigest()


def _resize(img: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, 32, 32), antialiased bilinear like PIL's resize."""
    if img.shape[-2:] == (IMAGE_SIZE, IMAGE_SIZE):
        return img
    out = torch.nn.functional.interpolate(img[None].float(), size=(IMAGE_SIZE, IMAGE_SIZE),
                                          mode="bilinear", antialias=True, align_corners=False)
    return out[0].round().clamp(0, 255).to(torch.uint8)


def _decode_chunk(files: Sequence[Path]) -> torch.Tensor:
    try:
        from torchvision.io import ImageReadMode, decode_image, decode_jpeg, read_file
    except ImportError:
        decode_jpeg = None
    if decode_jpeg is None:  # PIL fallback (slower, always exact)
        Image = require("PIL.Image", "to decode images (or install torchvision)")
        out = []
        for f in files:
            with Image.open(f) as im:
                im = im.convert("RGB")
                if im.size != (IMAGE_SIZE, IMAGE_SIZE):
                    im = im.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
                out.append(torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1))
        return torch.stack(out) if out else torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    raw = [read_file(str(f)) for f in files]
    jpeg = [i for i, f in enumerate(files) if f.suffix.lower() in (".jpg", ".jpeg")]
    decoded: List[Optional[torch.Tensor]] = [None] * len(files)
    if jpeg:  # a list goes through one call, much faster than one call per image
        for i, img in zip(jpeg, decode_jpeg([raw[i] for i in jpeg], mode=ImageReadMode.RGB)):
            decoded[i] = img
    for i, img in enumerate(decoded):
        if img is None:
            decoded[i] = decode_image(raw[i], mode=ImageReadMode.RGB)
    if not decoded:
        return torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    return torch.stack([_resize(img) for img in decoded])


def decode_images(files: Sequence[Path], workers: int = 1, progress: bool = False) -> torch.Tensor:
    """Decode image files into one uint8 (N, 3, 32, 32) tensor, `workers` threads at a time
    (torchvision's decoders release the GIL)."""
    import warnings
    with warnings.catch_warnings():  # torchvision >= 0.29 warns on every call that torchcodec replaces it
        warnings.simplefilter("ignore", DeprecationWarning)
        return _decode_images(files, workers, progress)


def _decode_images(files: Sequence[Path], workers: int, progress: bool) -> torch.Tensor:
    chunk = 1000
    chunks = [files[i:i + chunk] for i in range(0, len(files), chunk)]
    bar = None
    if progress:
        tqdm = require("tqdm", "for progress bars (or pass --no-progress)")
        bar = tqdm.tqdm(total=len(files), desc="decoding", unit="img", leave=False)
    results = []
    if workers > 1:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(workers) as pool:
            for part in pool.map(_decode_chunk, chunks):
                results.append(part)
                if bar:
                    bar.update(len(part))
    else:
        for c in chunks:
            results.append(_decode_chunk(c))
            if bar:
                bar.update(len(c))
    if bar:
        bar.close()
    if not results:
        return torch.empty(0, 3, IMAGE_SIZE, IMAGE_SIZE, dtype=torch.uint8)
    return torch.cat(results)


def load_image_folder(d: Path, workers: int = 1, progress: bool = False, log=print) -> Dataset:
    classes, train_files, train_labels, train_key = _list_image_folder(d / "train")
    if not classes or not train_files:
        raise DataError(f"{d}/train has no <class>/ sub-directories with images")
    _, test_files, test_labels, test_key = _list_image_folder(d / "test", classes)
    # The cache key changes when the tree's path, file names, sizes or times change.
    key = hashlib.sha1(f"{train_key}{test_key}".encode()).hexdigest()[:16]
    cache = cache_dir() / f"imagefolder-{d.resolve().name}-{key}.npz"
    if cache.is_file():
        with np.load(cache) as z:
            return Dataset(Split(torch.from_numpy(z["train_images"]), torch.from_numpy(z["train_labels"])),
                           Split(torch.from_numpy(z["test_images"]), torch.from_numpy(z["test_labels"])),
                           [str(c) for c in z["classes"]], f"image folder {d} (cached {cache})")
    start = time.perf_counter()
    train_images = decode_images(train_files, workers, progress)
    test_images = decode_images(test_files, workers, progress)
    seconds = time.perf_counter() - start
    log(f"decoded {len(train_files) + len(test_files)} images from {d} in {seconds:.1f} s "
        f"({workers} worker(s)); caching them in {cache}")
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, train_images=train_images.numpy(), train_labels=np.asarray(train_labels, np.int64),
             test_images=test_images.numpy(), test_labels=np.asarray(test_labels, np.int64),
             classes=np.asarray(classes))
    os.replace(tmp, cache)  # atomic: a concurrent reader never sees half a file
    return Dataset(Split(train_images, torch.tensor(train_labels, dtype=torch.int64)),
                   Split(test_images, torch.tensor(test_labels, dtype=torch.int64)),
                   classes, f"image folder {d} (decoded in {seconds:.1f} s)")


# ----------------------------------------------------------------------------------------- entry

def load_cifar10(data: Optional[os.PathLike] = None, download: bool = True, workers: int = 1,
                 progress: bool = False, log=print) -> Dataset:
    """CIFAR-10 from `data` (or $CUCONV_DATA, or the cache directory): python batches in DIR or
    DIR/cifar-10-batches-py, or an image-folder tree DIR/train, DIR/test; otherwise the official
    release is downloaded into DIR (when `download`)."""
    root = Path(data) if data is not None else default_data_dir()
    root = root.expanduser()
    for d in (root, root / CIFAR10_BATCH_DIR):
        if _has_python_batches(d):
            return load_python_batches(d)
    if _is_image_folder(root):
        return load_image_folder(root, workers, progress, log)
    if not download:
        raise DataError(f"no CIFAR-10 found in {root}: expected python batches (data_batch_1..5, "
                        f"test_batch) or DIR/train/<class>/*, DIR/test/<class>/*; set --data or CUCONV_DATA")
    if root.exists() and any(root.iterdir()) and data is not None and not (root / CIFAR10_ARCHIVE).exists():
        raise DataError(f"{root} holds neither CIFAR-10 python batches nor an image-folder tree "
                        f"(train/<class>/*, test/<class>/*); point --data or CUCONV_DATA at one, or at an "
                        f"empty directory to download the official release there")
    log(f"downloading CIFAR-10 into {root}")
    return load_python_batches(download_cifar10(root))


# ----------------------------------------------------------------------------- batches as tensors

def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """Random crop (zero padding `padding` on each side) and random horizontal flip of a whole
    batch (N, C, H, W) at once; offsets and flips come from `generator` (on the CPU)."""
    n, c, h, w = images.shape
    oy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    ox = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    dev = images.device
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    rows = (oy[:, None] + torch.arange(h)).to(dev)                     # (N, H)
    cols = ox[:, None] + torch.arange(w)                               # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols).to(dev)      # a flip reverses the columns
    batch = torch.arange(n, device=dev)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]         # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


class Normalizer:
    """uint8 images -> float: scaled to [0, 1] ('scale'), or also standardised per channel
    ('standard', with the CIFAR-10 training statistics)."""

    def __init__(self, mode: str = "scale", mean=CIFAR10_MEAN, std=CIFAR10_STD):
        if mode not in ("scale", "standard"):
            raise ValueError(f"normalize must be 'scale' or 'standard', not {mode!r}")
        self.mode, self.mean, self.std = mode, tuple(mean), tuple(std)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.float().div_(255)
        if self.mode == "standard":
            mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
            x = (x - mean) / std
        return x

    def state(self):
        return {"mode": self.mode, "mean": list(self.mean), "std": list(self.std)}
