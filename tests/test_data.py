import hashlib
import os

import pytest
import numpy as np
import torch

from bnviz import data
from bnviz.errors import BnvizError


def test_shipped_files_decompress_to_the_published_md5(tmp_path):
    root = data.prepare_raw_mnist(tmp_path)
    for name, expected in data.MNIST_MD5.items():
        assert hashlib.md5((root / "MNIST" / "raw" / name).read_bytes()).hexdigest() == expected


def test_missing_data_gives_one_clear_message(tmp_path):
    with pytest.raises(BnvizError, match="missing"):
        data.prepare_raw_mnist(tmp_path / "out", source=tmp_path / "nowhere")


def test_shapes_labels_and_standardisation(mnist):
    assert mnist.train_x.shape == (60000, 1, 28, 28) and mnist.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(mnist.train_y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert torch.bincount(mnist.test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    train_x = mnist.train_x.materialise()
    assert abs(train_x.mean().item()) < 1e-3
    assert abs(train_x.std().item() - 1) < 1e-3


def test_uint8_training_images_index_to_the_same_floats_as_the_whole_set(mnist):
    """Kept as uint8 (a quarter of float32's memory), standardised per index: bit for bit
    what standardising all 60,000 at once gives, for every kind of index bnviz uses."""
    assert mnist.train_x.pixels.dtype == torch.uint8 and len(mnist.train_x) == 60000
    whole = mnist.train_x.materialise()
    assert whole.dtype == torch.float32 and whole.shape == (60000, 1, 28, 28)
    batch = torch.randperm(60000, generator=torch.Generator().manual_seed(0))[:60]
    mask = torch.isin(mnist.train_y, torch.tensor([0, 4]))
    for index in (batch, mask, slice(100, 700), slice(None)):
        assert torch.equal(mnist.train_x[index], whole[index])
    assert torch.equal(mnist.train_x[7], whole[7]) and torch.equal(mnist.train_x.clone(), whole)
    x, y = data.class_subset(mnist.train_x, mnist.train_y, (3,))
    assert torch.equal(x, whole[mnist.train_y == 3]) and len(x) == len(y)
    x, _ = data.first_examples(mnist.train_x, mnist.train_y, 500, seed=2)
    assert torch.equal(x, data.first_examples(whole, mnist.train_y, 500, seed=2)[0])
    with pytest.raises(TypeError):
        mnist.train_x[:, 0]


def test_the_trainers_chunks_are_the_indexed_images_in_a_reused_buffer(mnist):
    """The accelerator's chunk of batches (bnviz.train._chunk_images) gives, bit for bit, what
    indexing gives, for every kind of training images (uint8 standardised per batch, a float
    copy, binarised, a few rows replaced, a plain tensor), written into the one buffer its
    thread reuses; a chunk over the buffer's size is a tensor of its own."""
    from bnviz.train import CHUNK_EXAMPLES, _chunk_images

    rows = torch.randperm(60000, generator=torch.Generator().manual_seed(3))[:1020]
    pixels = mnist.train_x.pixels
    kinds = {
        "uint8": data.StandardisedImages(pixels),
        "float copy": data.StandardisedImages(pixels, float_copy=True),
        "binarised": data.StandardisedImages(pixels, binary_threshold=128),
        "rows replaced": data.ReplacedRows(data.StandardisedImages(pixels), rows[:5], torch.full((5, 1, 28, 28), 7.0)),
        "plain tensor": mnist.train_x[:3000],
    }
    for name, images in kinds.items():
        index = rows if name != "plain tensor" else rows % 3000
        first = _chunk_images(images, index)
        assert torch.equal(first, images[index]), name
        again = _chunk_images(images, index[:600])
        assert again.data_ptr() == first.data_ptr() and torch.equal(again, images[index[:600]]), name
    assert torch.equal(kinds["rows replaced"][rows[:5]], torch.full((5, 1, 28, 28), 7.0))
    big = torch.arange(CHUNK_EXAMPLES + 1)
    assert torch.equal(_chunk_images(kinds["uint8"], big), kinds["uint8"][big])


def test_uint8_test_images_index_to_the_same_floats_and_share_the_evaluation_head(mnist):
    """The test set is uint8 too: every index bnviz uses gives the floats of the whole set
    standardised at once, and the first 2,000 images (every run's evaluation set) are
    built once and shared, as views of a float test set were."""
    test_x = mnist.test_x
    assert test_x.pixels.dtype == torch.uint8 and len(test_x) == 10000
    whole = test_x.materialise()
    index = torch.randperm(10000, generator=torch.Generator().manual_seed(1))
    for key in (index[:60], index[:120].reshape(2, 60), mnist.test_y == 3, slice(0, 2000), slice(None, 500), slice(9000, None), slice(None)):
        assert torch.equal(test_x[key], whole[key]), key
    for key in (7, -1, np.int64(42), torch.tensor(5)):
        assert torch.equal(test_x[key], whole[int(key)])
    assert test_x[:2000] is test_x[:2000]  # one copy for every run
    assert test_x[:9000] is not test_x[:9000]  # past the shared size: built per call, freed after


def test_batch_sampler_is_seeded_and_covers_an_epoch():
    first = data.BatchSampler(100, 10, seed=3)
    second = data.BatchSampler(100, 10, seed=3)
    epoch = torch.cat([first.next_indices() for _ in range(10)])
    assert sorted(epoch.tolist()) == list(range(100))
    assert torch.equal(torch.cat([second.next_indices() for _ in range(10)]), epoch)


@pytest.mark.parametrize("shift", data.SHIFTS)
def test_shifts_keep_shape_and_zero_strength_is_identity(mnist, shift):
    x = mnist.test_x[:16]
    shifted = data.shift_images(x, shift, 0.7)
    assert shifted.shape == x.shape and torch.isfinite(shifted).all()
    if shift != "none":
        assert not torch.allclose(shifted, x)
    assert torch.allclose(data.shift_images(x, shift, 0.0), x, atol=1e-5)


def test_class_subset(mnist):
    x, y = data.class_subset(mnist.test_x, mnist.test_y, (0, 1))
    assert set(y.unique().tolist()) == {0, 1} and len(x) == 980 + 1135
