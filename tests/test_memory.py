"""What keeps the app under a hosted tier's 1 GB: no float copy of the whole training set.

(The app's measured memory: ``benchmarks/classroom_load.py --visit-all``.)
"""
import torch

from bnviz.bn_stats import data_moments


def test_moments_in_chunks_equal_moments_at_once(mnist):
    """data_moments reads MNIST's uint8-backed images a chunk at a time; the numbers are those of
    the whole float set at once (the mean exactly, the float32 products to float32 rounding)."""
    whole = mnist.train_x[:12_000]
    flat = whole.flatten(1)
    mean = flat.double().mean(dim=0)
    centred = flat - mean.to(flat.dtype)
    covariance = (centred.T @ centred).double() / len(flat)
    chunked = data_moments(mnist.train_x[:12_000], chunk=5_000)
    assert chunked.count == 12_000
    torch.testing.assert_close(chunked.mean, mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked.covariance, covariance, rtol=1e-5, atol=1e-6)


def test_training_images_stay_uint8(mnist):
    pixels = mnist.train_x.pixels
    assert pixels.dtype == torch.uint8
    assert pixels.element_size() * pixels.nelement() == 60000 * 28 * 28  # 47 MB, not 188 MB
