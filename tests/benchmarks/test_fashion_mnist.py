"""Tests for the offline Split-FashionMNIST helpers."""

import pytest
from avalanche.benchmarks.classic import SplitFMNIST

from avalanche_ctr.benchmarks import SplitFashionMNIST, prepare_fashion_mnist_root
from avalanche_ctr.benchmarks.fashion_mnist import DEFAULT_FASHION_MNIST_SOURCE

needs_debian_data = pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_SOURCE.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_SOURCE} absent (apt-get install dataset-fashion-mnist)",
)


@pytest.fixture(scope="module")
def fmnist_root(tmp_path_factory):
    return prepare_fashion_mnist_root(tmp_path_factory.mktemp("data"))


@needs_debian_data
def test_prepare_root_layout_and_idempotence(fmnist_root):
    raw = fmnist_root / "FashionMNIST" / "raw"
    names = sorted(p.name for p in raw.iterdir())
    assert names == [
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
    ]
    mtimes = {p.name: p.stat().st_mtime_ns for p in raw.iterdir()}
    # Already prepared: no source needed, nothing rewritten.
    assert prepare_fashion_mnist_root(fmnist_root, source=fmnist_root / "nowhere") == fmnist_root
    assert {p.name: p.stat().st_mtime_ns for p in raw.iterdir()} == mtimes


@needs_debian_data
def test_avalanche_split_fmnist_offline(fmnist_root):
    bm = SplitFMNIST(
        n_experiences=5,
        return_task_id=True,
        class_ids_from_zero_in_each_exp=True,
        seed=0,
        dataset_root=fmnist_root,
    )

    assert len(bm.train_stream) == len(bm.test_stream) == 5
    assert [exp.task_label for exp in bm.train_stream] == list(range(5))
    assert len(bm.train_stream[0].dataset) == 12000
    assert all(sorted(exp.classes_in_this_experience) == [0, 1] for exp in bm.train_stream)
    assert {int(t) for t in bm.test_stream[4].dataset.targets} == {0, 1}


@needs_debian_data
def test_convenience_wrapper(fmnist_root):
    bm = SplitFashionMNIST(dataset_root=fmnist_root)

    assert [exp.task_label for exp in bm.test_stream] == list(range(5))
    assert len(bm.train_stream[0].dataset) == 12000


def test_missing_source_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        prepare_fashion_mnist_root(tmp_path / "root", source=tmp_path)
    assert str(tmp_path / "train-images-idx3-ubyte.gz") in str(err.value)


def _fake_source(folder, n_train=40, n_test=20):
    """A tiny Fashion-MNIST in the Debian layout (gzipped idx files), 10 classes."""
    import gzip
    import struct

    import numpy as np

    rng = np.random.RandomState(0)
    folder.mkdir()
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.randint(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        with gzip.open(folder / f"{split}-images-idx3-ubyte.gz", "wb") as handle:
            handle.write(struct.pack(">IIII", 2051, n, 28, 28) + images.tobytes())
        with gzip.open(folder / f"{split}-labels-idx1-ubyte.gz", "wb") as handle:
            handle.write(struct.pack(">II", 2049, n) + labels.tobytes())
    return folder


def test_permuted_fmnist_has_ten_way_tasks_each_with_its_own_permutation(tmp_path):
    import torch

    from avalanche_ctr.benchmarks import PermutedFashionMNIST

    source = _fake_source(tmp_path / "source")
    bm = PermutedFashionMNIST(3, seed=0, dataset_root=tmp_path / "root", source=source)
    assert [exp.task_label for exp in bm.train_stream] == [0, 1, 2]
    assert [len(exp.dataset) for exp in bm.test_stream] == [20, 20, 20]
    assert all(sorted(exp.classes_in_this_experience) == list(range(10)) for exp in bm.train_stream)
    first = [exp.dataset.eval()[0][0].flatten() for exp in bm.train_stream]
    # the same image under three permutations: same pixel values, other orders
    assert all(torch.equal(x.sort().values, first[0].sort().values) for x in first)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    again = PermutedFashionMNIST(3, seed=0, dataset_root=tmp_path / "root", source=source)
    assert torch.equal(
        again.train_stream[2].dataset.eval()[0][0], bm.train_stream[2].dataset.eval()[0][0]
    )
    with pytest.raises(ValueError, match="positive integer"):
        PermutedFashionMNIST(0, dataset_root=tmp_path / "root", source=source)


def test_permuted_fmnist_keeps_n_train_images_the_same_in_every_task(tmp_path):
    import torch

    from avalanche_ctr.benchmarks import PermutedFashionMNIST

    source = _fake_source(tmp_path / "source")
    root = tmp_path / "root"
    full = PermutedFashionMNIST(2, seed=3, dataset_root=root, source=source)
    bm = PermutedFashionMNIST(2, seed=3, dataset_root=root, source=source, n_train=15)
    assert [len(exp.dataset) for exp in bm.train_stream] == [15, 15]
    assert [len(exp.dataset) for exp in bm.test_stream] == [20, 20]  # test sets stay whole
    kept = [exp.dataset.eval() for exp in bm.train_stream]
    pool = [full.train_stream[0].dataset.eval()[i][0] for i in range(40)]
    # every kept image is one of the 40 (under task 0's permutation), none twice
    found = [
        next(j for j, x in enumerate(pool) if torch.equal(x, kept[0][i][0])) for i in range(15)
    ]
    assert len(set(found)) == 15
    # task 1 keeps the same images: same pixel values in another order
    for i in range(15):
        assert torch.equal(
            kept[0][i][0].flatten().sort().values, kept[1][i][0].flatten().sort().values
        )
    with pytest.raises(ValueError, match="n_train must be a positive number of images"):
        PermutedFashionMNIST(2, dataset_root=root, source=source, n_train=0)


def test_permuted_fmnist_trains_ten_way_heads_with_exssnet(tmp_path):
    import torch
    from _helpers import quiet_evaluator
    from avalanche.models import MTSimpleMLP

    from avalanche_ctr.benchmarks import PermutedFashionMNIST
    from avalanche_ctr.training import ExSSNeT

    source = _fake_source(tmp_path / "source")
    bm = PermutedFashionMNIST(2, seed=0, dataset_root=tmp_path / "root", source=source)
    model = MTSimpleMLP(input_size=784, hidden_size=16)
    strategy = ExSSNeT(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        mask_epochs=1,
        weight_epochs=1,
        train_mb_size=20,
        evaluator=quiet_evaluator(),
    )
    for experience in bm.train_stream:
        strategy.train(experience)
    strategy.eval(bm.test_stream)
    heads = strategy.model.net.classifier.classifiers
    assert strategy.model.trained_tasks == [0, 1]
    assert [heads[str(t)].classifier.out_features for t in (0, 1)] == [10, 10]
