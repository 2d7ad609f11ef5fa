"""Shared fixtures: a tiny generated CIFAR-10 look-alike and the real CIFAR-10 JPEG copy."""

import contextlib
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from resnet_repro.data.sources import CIFAR10_CLASSES, DATA_ENV, load_cifar10

# The real copy is named the way users name it, by $RESNET_REPRO_DATA; read once here and then cleared, so that
# no test (nor a command a test starts) trains on a source it did not name itself.
REAL_CIFAR = os.environ.pop(DATA_ENV, None)


def write_imagefolder(root: Path, *, train: int = 8, test: int = 4, ext: str = "png", seed: int = 0) -> Path:
    """Write seeded random 32x32 RGB images as root/{train,test}/<class>/NNNN.<ext>; return root."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", train), ("test", test)):
        for cls in CIFAR10_CLASSES:
            folder = root / split / cls
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.{ext}")
    return root


@pytest.fixture
def send_signal(monkeypatch):
    """Factory: `with send_signal(signal.SIGINT, after=3): ...` sends that real signal to this process during
    iteration `after` of any run trained inside the block (Ctrl-C, or SIGTERM as SLURM sends it), so `after`
    iterations finish."""
    from resnet_repro.module import ClassifierModule

    @contextlib.contextmanager
    def during(signum: int, after: int):
        original = ClassifierModule.on_train_batch_start

        def send(self, batch, batch_idx):
            if self.global_step == after - 1:
                os.kill(os.getpid(), signum)
            return original(self, batch, batch_idx)

        with monkeypatch.context() as patch:
            patch.setattr(ClassifierModule, "on_train_batch_start", send)
            yield

    return during


@pytest.fixture
def make_imagefolder(tmp_path):
    """Factory: `make_imagefolder(train=8, test=4, ext="png", seed=0)` -> a fresh ImageFolder dir."""
    made = []

    def make(**kwargs) -> Path:
        made.append(tmp_path / f"imagefolder{len(made)}")
        return write_imagefolder(made[-1], **kwargs)

    return make


@pytest.fixture(scope="session")
def tiny_cifar_archive(tmp_path_factory) -> Path:
    """A .tar.gz of tiny-cifar/{train,test}/<class>/*.png: 8 train + 4 test random images per class."""
    base = tmp_path_factory.mktemp("tiny-cifar")
    folder = write_imagefolder(base / "tiny-cifar")
    archive = base / "tiny-cifar.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(folder, arcname="tiny-cifar")  # nested one level, like the real JPEG copy
    return archive


@pytest.fixture(scope="session")
def cifar_cache_root(tmp_path_factory) -> Path:
    """A data root shared by the whole test session, so each copy is decoded once per session."""
    return tmp_path_factory.mktemp("resnet-repro-home")


@pytest.fixture(scope="session")
def tiny_cifar(tiny_cifar_archive, cifar_cache_root):
    """CifarArrays of the tiny generated archive (80 train, 40 test images)."""
    return load_cifar10(tiny_cifar_archive, cifar_cache_root, full=False, progress=False)


@pytest.fixture(scope="session")
def real_cifar_path() -> Path:
    """The real CIFAR-10 JPEG copy (cifar10-jpg.tar.gz) that $RESNET_REPRO_DATA named, or a skip saying why not."""
    if not REAL_CIFAR:
        pytest.skip(f"real-data tests need the CIFAR-10 JPEG copy: set {DATA_ENV} to its cifar10-jpg.tar.gz")
    path = Path(REAL_CIFAR).expanduser().resolve()
    if not (path.is_file() and tarfile.is_tarfile(path)):
        pytest.skip(f"real-data tests need the CIFAR-10 JPEG copy's archive; {DATA_ENV}={REAL_CIFAR} is not one")
    return path


@pytest.fixture(scope="session")
def real_cifar(real_cifar_path, cifar_cache_root):
    """CifarArrays of the real JPEG copy, decoded once per test session (about 8 s on 2 cores)."""
    return load_cifar10(real_cifar_path, cifar_cache_root, progress=False)


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test, its threads given back after: on two cores shared with other work, two
    OpenMP threads per test process oversubscribe them (the evaluation tests ran about 5x slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
