"""MNIST, offline, as whole tensors on one device; batches are drawn by index.

The repo ships the verified MNIST copy in ``data/mnist`` (see its README for
provenance, license and checksums). :func:`read_idx` decompresses a shipped
``.gz`` IDX file in memory and checks it whole (the gzip CRC, the size its
header implies, and the published md5 of the uncompressed file); nothing is
downloaded unless the caller explicitly allows it as a fallback. The tensors
are then kept in ``<cache>/mnist/mnist-uint8.pt`` with a CRC-32 per tensor, so
a later process loads them in tens of milliseconds; a damaged or truncated
tensor file is logged and rebuilt from the gzips, and a cache folder that
cannot be written only costs that speed-up.

Every fault gives one :class:`BnvizError` that says what to do (the page shows
it, the CLI prints it and exits 2): a missing, truncated or corrupt gzip, a
missing ``data/mnist`` folder, a download that cannot reach its host.

Images are scaled to [0, 1] and standardised with the training set's pixel
mean 0.1307 and std 0.3081, the values every MNIST example uses. The 60,000
training images and the 10,000 test images stay uint8 in memory (55 MB instead
of 219 MB as float32, for a hosted tier's memory) and are standardised when
indexed: a batch is the same float32 numbers, bit for bit, as a slice of the
whole set standardised at once.
"""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import logging
import math
import os
import pickle
import struct
import tempfile
import threading
import weakref
import zlib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

import torch

from .errors import BnvizError

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MNIST_DIR = REPO_ROOT / "data" / "mnist"

# md5 of the *uncompressed* IDX files, as published MNIST loaders check them.
MNIST_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_PIXEL_MEAN = 0.1307  # training-set pixel mean on the 0..1 scale
MNIST_PIXEL_STD = 0.3081
NUM_CLASSES = 10
IMAGE_SHAPE = (1, 28, 28)


def cache_dir() -> Path:
    """Where bnviz keeps decompressed data and results (``BNVIZ_CACHE_DIR``)."""
    default = REPO_ROOT / ".bnviz_cache"
    return Path(os.environ.get("BNVIZ_CACHE_DIR", default))


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


RESTORE_HINT = "restore the shipped copy with `git checkout -- data/mnist` (or use a fresh clone of the repository)"
# IDX (LeCun et al.): a big-endian magic number (0x0803 images, 0x0801 labels), the sizes, then uint8 data
IDX_SHAPES = {
    "train-images-idx3-ubyte": (60000, 28, 28),
    "train-labels-idx1-ubyte": (60000,),
    "t10k-images-idx3-ubyte": (10000, 28, 28),
    "t10k-labels-idx1-ubyte": (10000,),
}
TEST_IMAGES = IDX_SHAPES["t10k-images-idx3-ubyte"][0]  # MNIST's test set: what "the full test set" means on a page
IDX_MAGIC = {3: 0x0803, 1: 0x0801}  # by number of dimensions
GZIP_ERRORS = (OSError, EOFError, zlib.error)  # BadGzipFile (bad CRC, header) is an OSError; a cut stream an EOFError


def read_idx(compressed: Path, name: str) -> bytearray:
    """The uncompressed IDX file ``name`` from ``compressed`` (.gz), verified whole.

    Raises :class:`BnvizError` (one sentence with the fix) when the file is
    missing, truncated, not gzip, fails gzip's CRC, has the wrong size or header,
    or its md5 differs from the published one (``MNIST_MD5``).
    """
    shape = IDX_SHAPES[name]
    header = struct.pack(f">I{len(shape)}I", IDX_MAGIC[len(shape)], *shape)
    buffer = bytearray(len(header) + math.prod(shape))
    if not compressed.is_file():
        raise BnvizError(f"MNIST file {compressed} is missing. bnviz ships MNIST in data/mnist/: {RESTORE_HINT}.")
    try:
        with gzip.open(compressed, "rb") as source:
            size = source.readinto(buffer)
            trailing = source.read(1)  # reading to the end is what checks gzip's CRC and length
    except GZIP_ERRORS as exc:
        raise BnvizError(f"MNIST file {compressed} is damaged ({exc}); {RESTORE_HINT}.") from None
    if size != len(buffer) or trailing or not buffer.startswith(header):
        raise BnvizError(f"MNIST file {compressed} is damaged (not the {name} of {len(buffer):,} bytes it should hold); {RESTORE_HINT}.")
    if hashlib.md5(buffer).hexdigest() != MNIST_MD5[name]:
        raise BnvizError(f"MNIST file {compressed} is damaged (md5 mismatch); {RESTORE_HINT}.")
    return buffer


def idx_tensor(buffer: bytearray, name: str) -> torch.Tensor:
    """A verified IDX buffer as torchvision's MNIST gives it: images uint8 (N, 28, 28), labels int64 (N,)."""
    shape = IDX_SHAPES[name]
    values = torch.frombuffer(buffer, dtype=torch.uint8, offset=4 * (len(shape) + 1)).view(shape)
    return values if len(shape) == 3 else values.to(torch.int64)


def prepare_raw_mnist(root: Path | None = None, source: Path = SHIPPED_MNIST_DIR) -> Path:
    """Decompress the shipped MNIST files into ``root/MNIST/raw`` (torchvision's layout), verified.

    Returns ``root``. bnviz itself reads the gzips directly (:func:`read_idx`);
    this is for tools that want the raw files. Raises ``BnvizError`` with one
    clear message when a file is missing or corrupt, or the folder cannot be written.
    """
    root = Path(root) if root is not None else cache_dir() / "mnist"
    raw = root / "MNIST" / "raw"
    for name in MNIST_MD5:
        target = raw / name
        if target.exists() and _md5(target) == MNIST_MD5[name]:
            continue
        buffer = read_idx(source / f"{name}.gz", name)
        try:
            raw.mkdir(parents=True, exist_ok=True)
            _write_atomically(target, lambda handle: handle.write(buffer))
        except OSError as exc:
            raise BnvizError(f"Cannot write the decompressed MNIST to {raw} ({exc.strerror}); set BNVIZ_CACHE_DIR to a writable folder.") from None
    return root


def _write_atomically(target: Path, write: Callable[[Any], Any]) -> None:
    """Write through a private temporary file, then rename: a reader never sees half a file."""
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream)
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(partial)
        raise


def _standardise(images_uint8: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """(N, 28, 28) uint8 -> (N, 1, 28, 28) float32: ``(pixel / 255 - 0.1307) / 0.3081``,
    elementwise, so any subset gives the same numbers as the whole set. With ``out`` (float32,
    N images), written there."""
    x = images_uint8.to(torch.float32) if out is None else out.view(images_uint8.shape).copy_(images_uint8)
    return x.div_(255.0).sub_(MNIST_PIXEL_MEAN).div_(MNIST_PIXEL_STD).unsqueeze(1)


# Standardising a batch of uint8 images costs ~0.1 ms on a slow CPU, a sixth of a training
# step; a float32 copy of the 60,000 images (188 MB) makes a batch a plain gather. The copy
# is kept where memory is plentiful: no cgroup limit under 2 GiB (hosted tiers give ~1 GiB).
# ``BNVIZ_TRAIN_IMAGES=uint8`` or ``float32`` decides instead. The numbers are the same.
FLOAT_COPY_MIN_MEMORY = 2 << 30


def memory_limit_bytes() -> int | None:
    """The cgroup's memory limit (v2, then v1), or None where there is none."""
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):  # v1 writes a huge number for "no limit"
            return int(text)
    return None


def keep_float_copy() -> bool:
    choice = os.environ.get("BNVIZ_TRAIN_IMAGES")
    if choice in ("uint8", "float32"):
        return choice == "float32"
    limit = memory_limit_bytes()
    return limit is None or limit >= FLOAT_COPY_MIN_MEMORY


SHARED_HEAD_MAX = 2_000  # TrainConfig's eval_examples default: the head every run evaluates on
SHARED_HEADS = 2


class StandardisedImages:
    """uint8 images that read as standardised float32 when indexed (a quarter of the memory).

    ``images[index]`` (an int, slice, index tensor or boolean mask) returns the
    float32 tensor ``_standardise`` gives for those images, shape (n, 1, 28, 28).
    Anything that needs the whole set as one tensor calls :meth:`materialise`.
    With ``float_copy`` (see :func:`keep_float_copy`), batches are gathered from a
    standardised float32 copy made on first use: the same numbers, faster.
    With ``binary_threshold`` t, every pixel is first set to 255 if it is >= t, else 0
    (the paper's binarised MNIST), per batch: no second copy of the 47 MB of pixels.
    With ``shared_heads`` (the test set), ``images[:n]`` for n up to :data:`SHARED_HEAD_MAX`
    is built once and shared (each run evaluates on the first 2,000 test images: one
    float copy for all of them, as the views of a float test set were).
    """

    dtype = torch.float32

    def __init__(self, pixels: torch.Tensor, float_copy: bool = False, binary_threshold: int | None = None, shared_heads: bool = False):
        self.pixels = pixels  # (N, 28, 28) uint8
        self.float_copy = float_copy
        self.binary_threshold = binary_threshold
        self.shared_heads = shared_heads
        self._heads: dict[int, torch.Tensor] = {}
        self._floats: torch.Tensor | None = None
        self._subsets: weakref.WeakValueDictionary = weakref.WeakValueDictionary()  # key -> StandardisedImages, while a run holds it
        self._lock = threading.Lock()

    def subset(self, index: torch.Tensor, key) -> "StandardisedImages":
        """The images at ``index`` as uint8 ``StandardisedImages`` of their own, shared by every
        caller that asks with the same ``key`` while one of them still holds it."""
        with self._lock:
            subset = self._subsets.get(key)
            if subset is None:
                subset = StandardisedImages(self.pixels.index_select(0, index), float_copy=self.float_copy, binary_threshold=self.binary_threshold)
                self._subsets[key] = subset
            return subset

    def _images(self, rows: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """Standardised float32 (n, 1, 28, 28) of uint8 ``rows`` (n, 28, 28), binarised first if asked."""
        if self.binary_threshold is not None:
            rows = (rows >= self.binary_threshold).to(torch.uint8) * 255
        return _standardise(rows, out)

    def take_into(self, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``self[index]`` for a 1-d long ``index``, written into ``out`` (float32, ``len(index)``
        images) and returned: the same numbers, in memory the caller reuses (the trainer's
        chunks, ``bnviz.train.CHUNK_EXAMPLES``)."""
        if self.float_copy:
            return torch.index_select(self._float_images(), 0, index, out=out)
        return self._images(self.pixels.index_select(0, index), out)

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):  # x[:, 0] would index the uint8 rows, not channels: not offered
            raise TypeError("StandardisedImages takes one index over images; call materialise() for more")
        if (index.dim() == 0 if isinstance(index, torch.Tensor) else hasattr(index, "__index__")):
            index = int(index)  # a Python, numpy or 0-d tensor integer: one image
            return self._images(self.pixels[index : index + 1 or None])[0]
        if isinstance(index, torch.Tensor) and index.dim() > 1 and index.dtype == torch.long:  # e.g. (batches, batch size)
            return self[index.reshape(-1)].reshape(*index.shape, *IMAGE_SHAPE)
        if isinstance(index, torch.Tensor) and index.dim() == 1 and index.dtype == torch.long:
            if self.float_copy:
                return self._float_images().index_select(0, index)
            return self._images(self.pixels.index_select(0, index))  # a batch: ~7x faster than advanced indexing
        if self.shared_heads and isinstance(index, slice) and index.start in (None, 0) and index.step in (None, 1) and index.stop is not None:
            return self._head(min(index.stop, len(self.pixels)))
        return self._images(self.pixels[index])

    def shares_head(self, count: int) -> bool:
        """Whether ``self[:count]`` is the shared copy (built once, kept; see ``shared_heads``)."""
        return self.shared_heads and 0 < min(count, len(self.pixels)) <= SHARED_HEAD_MAX

    def _head(self, count: int) -> torch.Tensor:
        if not self.shares_head(count):
            return self._images(self.pixels[:count])
        with self._lock:
            if count not in self._heads:
                while len(self._heads) >= SHARED_HEADS:  # the oldest goes (dicts keep insertion order)
                    self._heads.pop(next(iter(self._heads)))
                self._heads[count] = self._images(self.pixels[:count])
            return self._heads[count]

    def _float_images(self) -> torch.Tensor:
        with self._lock:  # worker threads: one copy
            if self._floats is None:
                self._floats = self.materialise()
            return self._floats

    def __len__(self) -> int:
        return len(self.pixels)

    @property
    def shape(self) -> torch.Size:
        return torch.Size((len(self.pixels), *IMAGE_SHAPE))

    @property
    def device(self) -> torch.device:
        return self.pixels.device

    def materialise(self) -> torch.Tensor:
        return self._images(self.pixels)

    def float(self) -> torch.Tensor:
        return self.materialise()

    def clone(self) -> torch.Tensor:  # a float copy to write into (e.g. corrupted images)
        return self.materialise()

    def double(self) -> torch.Tensor:
        return self.materialise().double()

    def to(self, *args, **kwargs) -> torch.Tensor:
        return self.materialise().to(*args, **kwargs)


class ReplacedRows(StandardisedImages):
    """``base`` (uint8 images read as standardised floats) with the rows ``where`` reading as
    ``replacement`` (k, 1, 28, 28) float32 instead: a few images changed in place (the
    distribution-shift page's corrupted scans) without a float copy of all 60,000 (188 MB).
    Any index gives what the same index of the patched whole set would (tested)."""

    def __init__(self, base: StandardisedImages, where: torch.Tensor, replacement: torch.Tensor):
        super().__init__(base.pixels, float_copy=base.float_copy, binary_threshold=base.binary_threshold)
        self._slot = torch.full((len(base),), -1, dtype=torch.long, device=base.pixels.device)
        self._slot[where] = torch.arange(len(where), device=base.pixels.device)
        self.replacement = replacement

    def __getitem__(self, index) -> torch.Tensor:
        if isinstance(index, tuple):
            raise TypeError("StandardisedImages takes one index over images; call materialise() for more")
        batch = isinstance(index, torch.Tensor) and index.dim() == 1 and index.dtype == torch.long
        rows = index if batch else torch.arange(len(self), device=self._slot.device)[index]  # a training batch as it is
        flat = rows.reshape(-1)
        out = super().__getitem__(flat)  # the 1-d gather (a fresh tensor: safe to write into)
        return self._patch(out, flat).reshape(*rows.shape, *IMAGE_SHAPE)

    def take_into(self, index: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return self._patch(super().take_into(index, out), index)

    def _patch(self, out: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``out`` (the unpatched images at the 1-d ``index``) with the replaced rows written in."""
        slots = self._slot[index]
        changed = slots >= 0
        if bool(changed.any()):
            out[changed] = self.replacement[slots[changed]].to(out.dtype)
        return out

    def _float_images(self) -> torch.Tensor:
        with self._lock:
            if self._floats is None:
                self._floats = StandardisedImages.materialise(self)  # the unpatched floats; __getitem__ patches
            return self._floats

    def materialise(self) -> torch.Tensor:
        return self[torch.arange(len(self), device=self._slot.device)]


@dataclass(frozen=True)
class MNIST:
    """The whole data set on one device.

    Shapes: ``train_x`` (60000, 1, 28, 28) and ``test_x`` (10000, 1, 28, 28),
    standardised float32 when indexed (:class:`StandardisedImages` over uint8, or a
    plain tensor for a subset an experiment builds); ``train_y`` (60000,) and
    ``test_y`` (10000,) int64.
    """

    train_x: torch.Tensor | StandardisedImages
    train_y: torch.Tensor
    test_x: torch.Tensor | StandardisedImages
    test_y: torch.Tensor

    @property
    def device(self) -> torch.device:
        return self.train_x.device


@lru_cache(maxsize=4)
def load_mnist(device: str = "cpu", allow_download: bool = False) -> MNIST:
    """Load MNIST once per process and device (the shipped copy, offline)."""
    tensors = _load_raw_tensors(allow_download)
    return MNIST(
        train_x=StandardisedImages(tensors["train_images"].to(device), float_copy=keep_float_copy()),
        train_y=tensors["train_labels"].to(device),
        test_x=StandardisedImages(tensors["test_images"].to(device), shared_heads=True),
        test_y=tensors["test_labels"].to(device),
    )


TENSOR_NAMES = {  # the snapshot's keys -> IDX files
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# what torch.load raises for a cut or scrambled file (a zip reader error is a RuntimeError)
SNAPSHOT_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, pickle.UnpicklingError)


def _crc32(tensor: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes: catches a truncated or zeroed tensor file (not tampering, which
    ``weights_only`` loading makes harmless), at about 1 GB/s."""
    return zlib.crc32(tensor.contiguous().view(torch.uint8).numpy())


def _load_raw_tensors(allow_download: bool) -> dict[str, torch.Tensor]:
    """The uint8 images and labels: from the tensor snapshot when it is intact, else from the gzips.

    Decompressing and checking the gzips takes about a second on a slow CPU; the
    snapshot (written atomically, each tensor's CRC-32 inside) loads in a few tens
    of milliseconds, which is what keeps a cold page quick.
    """
    snapshot = cache_dir() / "mnist" / "mnist-uint8.pt"
    tensors = _read_snapshot(snapshot)
    if tensors is not None:
        return tensors
    tensors = _read_shipped(allow_download)
    try:
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        crc = {key: _crc32(value) for key, value in tensors.items()}
        _write_atomically(snapshot, lambda handle: torch.save({**tensors, "crc32": crc}, handle))
    except OSError as exc:  # a read-only checkout or a full disk: slower next time, still correct
        log.warning("MNIST tensor snapshot %s not written (%s); the next process decompresses the gzips again", snapshot, exc)
    return tensors


def _read_snapshot(snapshot: Path) -> dict[str, torch.Tensor] | None:
    """The snapshot's tensors if it exists and every check passes; a damaged one is logged and removed."""
    if not snapshot.exists():
        return None
    problem = None
    try:
        stored = torch.load(snapshot, weights_only=True)
    except SNAPSHOT_READ_ERRORS as exc:
        problem = f"unreadable: {type(exc).__name__}: {str(exc)[:120]}"
    else:
        problem = _snapshot_problem(stored)
    if problem is None:
        return {key: stored[key] for key in TENSOR_NAMES}
    log.warning("MNIST tensor snapshot %s is damaged (%s): rebuilding it from data/mnist", snapshot, problem)
    with contextlib.suppress(OSError):
        snapshot.unlink()
    return None


def _snapshot_problem(stored) -> str | None:
    if not isinstance(stored, dict) or not isinstance(stored.get("crc32"), dict):
        return "not a bnviz MNIST snapshot (or one from before checksums)"
    for key, name in TENSOR_NAMES.items():
        tensor, shape = stored.get(key), IDX_SHAPES[name]
        dtype = torch.uint8 if len(shape) == 3 else torch.int64
        if not isinstance(tensor, torch.Tensor) or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            return f"{key} is not a {dtype} tensor of shape {shape}"
        if _crc32(tensor) != stored["crc32"].get(key):
            return f"{key} fails its CRC-32"
    return None


def _read_shipped(allow_download: bool) -> dict[str, torch.Tensor]:
    """The tensors from data/mnist, or (only if allowed) from a download when it is missing or damaged."""
    try:
        return {key: idx_tensor(read_idx(SHIPPED_MNIST_DIR / f"{name}.gz", name), name) for key, name in TENSOR_NAMES.items()}
    except BnvizError as shipped_problem:
        if not allow_download:
            raise
        from torchvision.datasets import MNIST as TorchvisionMNIST

        root = cache_dir() / "mnist"
        try:
            TorchvisionMNIST(root, train=True, download=True)
            TorchvisionMNIST(root, train=False, download=True)
        except (OSError, RuntimeError) as exc:  # no network surfaces as these (URLError is an OSError)
            raise BnvizError(f"{shipped_problem} A download was tried and failed ({exc}): {RESTORE_HINT}, or connect to the internet.") from None
        raw = root / "MNIST" / "raw"
        return {key: idx_tensor(read_idx(raw / f"{name}.gz", name), name) for key, name in TENSOR_NAMES.items()}


def class_subset(x: torch.Tensor, y: torch.Tensor, classes: tuple[int, ...] | None):
    """Keep only the examples whose label is in ``classes`` (None keeps all)."""
    if classes is None:
        return x, y
    keep = torch.isin(y, torch.tensor(classes, device=y.device))
    return x[keep], y[keep]


def first_examples(x: torch.Tensor, y: torch.Tensor, count: int | None, seed: int = 0):
    """A seeded random subset of ``count`` examples (None keeps all)."""
    if count is None or count >= len(y):
        return x, y
    index = _subset_index(len(y), count, seed).to(y.device)
    return x[index], y[index]


def _subset_index(total: int, count: int, seed: int) -> torch.Tensor:
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:count]


def training_subset(x, y: torch.Tensor, count: int | None, seed: int = 0):
    """:func:`first_examples` for a run's training set. Standardised uint8 images stay uint8 (a
    quarter of the bytes) and every run with the same subset shares one copy: a view training
    60 runs on 5,000 images each held 60 float copies (0.9 GB), now one uint8 copy per seed."""
    if isinstance(x, StandardisedImages) and count is not None and count < len(y):
        index = _subset_index(len(y), count, seed).to(y.device)
        return x.subset(index, key=(count, seed)), y[index]
    return first_examples(x, y, count, seed)


class BatchSampler:
    """Seeded batches by index: an epoch-wise permutation, no DataLoader.

    The same seed gives the same batch order on every device, because the
    permutation is drawn on the CPU and then moved.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int, device: torch.device | str = "cpu"):
        if num_examples < 1:
            raise BnvizError("The training set is empty: choose more examples or other classes.")
        self.num_examples = num_examples
        self.batch_size = min(batch_size, num_examples)
        self.generator = torch.Generator().manual_seed(seed)
        self.device = device
        self._order = torch.empty(0, dtype=torch.long)
        self._position = 0

    def state(self) -> tuple:
        """Where the sampler is, for :meth:`restore`: batches drawn ahead can be given back."""
        return self.generator.get_state(), self._order, self._position

    def restore(self, state: tuple) -> None:
        generator_state, self._order, self._position = state
        self.generator.set_state(generator_state)

    def next_indices(self) -> torch.Tensor:
        if self._position + self.batch_size > len(self._order):
            self._order = torch.randperm(self.num_examples, generator=self.generator).to(self.device)
            self._position = 0
        indices = self._order[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return indices


# ---------------------------------------------------------------- shifted data
SHIFTS = ("none", "translate", "rotate", "invert", "noise", "contrast")


def shift_images(x: torch.Tensor, shift: str, strength: float, seed: int = 0) -> torch.Tensor:
    """A distribution-shifted copy of standardised MNIST images ``x`` (N, 1, 28, 28).

    ``strength`` in [0, 1] scales each shift: translate up to 8 pixels,
    rotate up to 90 degrees, invert blends towards 1 - pixel, noise adds
    Gaussian pixel noise of std up to 1 (0..1 scale), contrast scales pixels
    around mid-grey down to 0. Shifts act on the 0..1 pixel scale and the
    result is standardised again with the *training* mean/std, as a deployed
    model would see it. Translate and rotate are torchvision's ``affine`` and ``rotate``
    (nearest pixel, zero fill), bit for bit (:func:`affine_nearest`).
    """
    if shift not in SHIFTS:
        raise BnvizError(f"Unknown shift {shift!r}; choose one of {', '.join(SHIFTS)}.")
    if not 0.0 <= strength <= 1.0:
        raise BnvizError("Shift strength must be between 0 and 1.")
    # one float copy, then in place: the same ops in the same order as the textbook expressions in
    # the comments (the same numbers), without their four temporary copies of the images (the
    # 10,000 test images are 31 MB each)
    pixels = x * MNIST_PIXEL_STD + MNIST_PIXEL_MEAN
    if shift == "translate":
        pixels = affine_nearest(pixels, angle=0.0, translate=(round(8 * strength), round(8 * strength)))
    elif shift == "rotate":
        pixels = rotate_nearest(pixels, angle=90.0 * strength)
    elif shift == "invert":  # (1 - strength) * pixels + strength * (1 - pixels)
        inverted = (1.0 - pixels).mul_(strength)
        pixels.mul_(1 - strength).add_(inverted)
        del inverted
    elif shift == "noise":  # (pixels + strength * noise).clamp(0, 1)
        generator = torch.Generator(device="cpu").manual_seed(seed)
        noise = torch.randn(pixels.shape, generator=generator).to(pixels.device)
        pixels.add_(noise.mul_(strength)).clamp_(0.0, 1.0)
        del noise
    elif shift == "contrast":  # 0.5 + (1 - strength) * (pixels - 0.5)
        pixels.sub_(0.5).mul_(1.0 - strength).add_(0.5)
    return pixels.sub_(MNIST_PIXEL_MEAN).div_(MNIST_PIXEL_STD)  # (pixels - mean) / std


def num_batches(num_examples: int, batch_size: int) -> int:
    return math.ceil(num_examples / batch_size)


# torchvision's geometric transforms, rewritten in torch for the two shifts above: importing
# torchvision's transforms imports torch._dynamo as well (+165 MiB resident with the CUDA
# build of torch; bnviz.optim says why that matters). The same matrices, grid and
# grid_sample call as torchvision 0.29's tensor kernels (``_get_inverse_affine_matrix``,
# ``_affine_grid``, ``_apply_grid_transform``), so the images are the same bit for bit
# (tests/test_distribution_shift.py).
def rotate_nearest(images: torch.Tensor, angle: float) -> torch.Tensor:
    """``torchvision.transforms.v2.functional.rotate(images, angle)``: counter-clockwise by
    ``angle`` degrees about the centre, nearest pixel, corners filled with 0; (N, C, H, W)."""
    angle = angle % 360
    if angle == 0:
        return images.clone()
    if angle == 180:
        return torch.rot90(images, k=2, dims=(-2, -1))
    if images.shape[-1] == images.shape[-2] and angle in (90, 270):
        return torch.rot90(images, k=1 if angle == 90 else 3, dims=(-2, -1))
    return _grid_transform(images, _inverse_affine_matrix(-angle, (0.0, 0.0)))


def affine_nearest(images: torch.Tensor, angle: float, translate: tuple[float, float]) -> torch.Tensor:
    """``torchvision.transforms.v2.functional.affine(images, angle, translate, scale=1, shear=0)``:
    rotate by ``angle`` degrees (clockwise, torchvision's convention here) and shift by
    ``translate`` pixels (x right, y down), nearest pixel, 0 where nothing maps."""
    return _grid_transform(images, _inverse_affine_matrix(angle, (float(translate[0]), float(translate[1]))))


def _inverse_affine_matrix(angle: float, translate: tuple[float, float]) -> list[float]:
    """The output-to-input map of a rotation about the centre then a translation, as torchvision
    computes it (centre 0, scale 1 and shear 0 kept in its expressions: the same floats)."""
    rot, sx, sy, scale = math.radians(angle), 0.0, 0.0, 1.0
    cx, cy = 0.0, 0.0
    tx, ty = translate
    cos_sy, tan_sx, rot_minus_sy = math.cos(sy), math.tan(sx), rot - sy
    cx_plus_tx, cy_plus_ty = cx + tx, cy + ty
    a = math.cos(rot_minus_sy) / cos_sy
    b = -(a * tan_sx + math.sin(rot))
    c = math.sin(rot_minus_sy) / cos_sy
    d = math.cos(rot) - c * tan_sx
    matrix = [d / scale, -b / scale, 0.0, -c / scale, a / scale, 0.0]
    matrix[2] += cx - matrix[0] * cx_plus_tx - matrix[1] * cy_plus_ty
    matrix[5] += cy - matrix[3] * cx_plus_tx - matrix[4] * cy_plus_ty
    return matrix


def _grid_transform(images: torch.Tensor, matrix: list[float]) -> torch.Tensor:
    """Sample float ``images`` (N, C, H, W) at the output pixels mapped through ``matrix``."""
    height, width = images.shape[-2:]
    dtype, device = images.dtype, images.device
    theta = torch.tensor(matrix, dtype=dtype, device=device).reshape(1, 2, 3)
    base = torch.empty(1, height, width, 3, dtype=dtype, device=device)  # pixel centres, origin at the image's centre
    base[..., 0].copy_(torch.linspace((1.0 - width) * 0.5, (width - 1.0) * 0.5, steps=width, device=device))
    base[..., 1].copy_(torch.linspace((1.0 - height) * 0.5, (height - 1.0) * 0.5, steps=height, device=device).unsqueeze_(-1))
    base[..., 2].fill_(1)
    rescaled = theta.transpose(1, 2).div_(torch.tensor([0.5 * width, 0.5 * height], dtype=dtype, device=device))
    grid = base.view(1, height * width, 3).bmm(rescaled).view(1, height, width, 2)
    flat = images.reshape(-1, *images.shape[-3:])
    grid = grid.expand(flat.shape[0], -1, -1, -1) if flat.shape[0] > 1 else grid
    out = torch.nn.functional.grid_sample(flat, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out.reshape(images.shape)
