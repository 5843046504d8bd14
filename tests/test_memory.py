"""What keeps the app under a hosted tier's 1 GB: no float copy of the whole training set.

(The app's measured memory: ``benchmarks/classroom_load.py --visit-all``.)
"""
import torch

from bnviz.bn_stats import data_moments
from fresh_process import assert_prints_ok, run_fresh


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


def test_training_and_test_images_stay_uint8(mnist):
    pixels = mnist.train_x.pixels
    assert pixels.dtype == torch.uint8
    assert pixels.element_size() * pixels.nelement() == 60000 * 28 * 28  # 47 MB, not 188 MB
    assert mnist.test_x.pixels.dtype == torch.uint8  # 8 MB, not 31 MB


def test_freed_memory_goes_back_to_the_system():
    """After a computation the app trims glibc's heaps: resident memory falls back once
    a large freed allocation that malloc would otherwise keep is released."""
    from pathlib import Path

    from bnviz.malloc import glibc, limit_malloc_arenas, release_freed_memory

    def resident_mib() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    limit_malloc_arenas()
    if glibc() is None:  # not glibc: both calls are no-ops
        release_freed_memory()
        return
    blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MB of small blocks (below mmap's threshold)
    del blocks[:-1]  # the last one pins the heap's top: only a trim can hand the rest back
    before = resident_mib()
    release_freed_memory()
    assert resident_mib() < before - 100


def test_the_float_copy_gives_the_same_batches_and_is_kept_only_with_memory_to_spare(mnist, monkeypatch):
    from bnviz import data
    from bnviz.data import StandardisedImages, keep_float_copy

    index = torch.randperm(60000, generator=torch.Generator().manual_seed(0))[:60]
    lean, fast = StandardisedImages(mnist.train_x.pixels), StandardisedImages(mnist.train_x.pixels, float_copy=True)
    assert torch.equal(lean[index], fast[index]) and fast._floats is not None and lean._floats is None
    monkeypatch.delenv("BNVIZ_TRAIN_IMAGES", raising=False)
    monkeypatch.setattr(data, "memory_limit_bytes", lambda: 1 << 30)  # a 1 GiB hosted tier
    assert not keep_float_copy()
    monkeypatch.setattr(data, "memory_limit_bytes", lambda: None)
    assert keep_float_copy()
    monkeypatch.setenv("BNVIZ_TRAIN_IMAGES", "uint8")
    assert not keep_float_copy()


def test_the_cnn_evaluates_in_small_chunks_with_the_same_numbers(mnist):
    """evaluate() feeds the CNN CNN_EVAL_CHUNK images at a time (its activations are ~80x an MLP's:
    2,000 at once held ~0.2 GB per model); loss and accuracy are those of one pass over all of them."""
    import torch.nn.functional as F

    from bnviz.models import ModelConfig, build_model
    from bnviz.train import CNN_EVAL_CHUNK, evaluate

    model = build_model(ModelConfig(arch="cnn", hidden=(8, 16), norm="batch", activation="relu"), seed=0)
    x, y = mnist.test_x[: 3 * CNN_EVAL_CHUNK + 7], mnist.test_y[: 3 * CNN_EVAL_CHUNK + 7]
    calls = []
    hook = model.register_forward_pre_hook(lambda _m, inputs: calls.append(len(inputs[0])))
    loss, accuracy, _ = evaluate(model, x, y)
    hook.remove()
    assert max(calls) == CNN_EVAL_CHUNK and sum(calls) == len(y)
    with torch.no_grad():
        logits = model.eval()(x)
    assert abs(loss - F.cross_entropy(logits, y).item()) < 1e-5
    assert accuracy == (logits.argmax(dim=1) == y).sum().item() / len(y)


def test_binarised_images_are_made_a_batch_at_a_time_from_the_shared_pixels(mnist):
    """The paper's binarised MNIST shares the grey-level uint8 pixels (no second 47 MB copy,
    nothing cached) and gives, batch by batch, the numbers of a binarised copy."""
    from bnviz.data import StandardisedImages, load_mnist
    from bnviz.experiments.paper_figure1 import BINARY_THRESHOLD, binarised_mnist

    binary = binarised_mnist("cpu")
    # the process's MNIST as the experiment sees it (an earlier test may have cleared load_mnist's cache)
    mnist = load_mnist("cpu")
    assert binary.train_x.pixels is mnist.train_x.pixels
    copy = StandardisedImages((mnist.train_x.pixels[:3000] >= BINARY_THRESHOLD).to(torch.uint8) * 255)
    index = torch.randperm(3000, generator=torch.Generator().manual_seed(0))[:64]
    assert torch.equal(binary.train_x[index], copy[index])
    assert torch.equal(binary.train_x[5:9], copy[5:9]) and torch.equal(binary.train_x[7], copy[7])
    assert binary.test_x.pixels is mnist.test_x.pixels  # no copy of the test pixels either
    assert set(binary.test_x.materialise().unique().tolist()) == set(StandardisedImages(torch.tensor([[[0, 255]]], dtype=torch.uint8)).materialise().unique().tolist())
    assert binarised_mnist("cpu").test_x is not binary.test_x  # built per run, freed after it
    test_copy = StandardisedImages((mnist.test_x.pixels[:100] >= BINARY_THRESHOLD).to(torch.uint8) * 255)
    assert torch.equal(binary.test_x[:100], test_copy[:100])


def _resident_mib() -> float:
    from pathlib import Path

    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_large_freed_block_goes_back_at_once_after_a_larger_one():
    """With the app's fixed mmap threshold a block of 4 MiB or more is its own mapping, returned
    when freed, even after a larger block was freed (glibc's own rule would then serve it from
    the heap and keep it). In a process of its own: the resident size is the whole process's,
    and a test process may still be training (a job of an earlier test) on other threads."""
    script = """
import sys
from bnviz.malloc import MMAP_THRESHOLD_BYTES, glibc, limit_malloc_arenas

def resident_mib():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0

limit_malloc_arenas()
if glibc() is None:
    sys.exit(0)
larger = bytes([1]) * (24 << 20)
del larger  # glibc alone would now raise its mmap threshold to 24 MiB
before = resident_mib()
block = bytes([2]) * (4 * MMAP_THRESHOLD_BYTES)  # 16 MiB, written: resident
grown = resident_mib() - before
del block
kept = resident_mib() - before
print(f"grown {grown:.1f} MiB, kept {kept:.1f} MiB")
sys.exit(0 if grown > 12 and kept < 4 else 1)
"""
    done = run_fresh(script, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_accelerated_training_does_not_page_fault_at_every_chunk():
    """With the server's malloc settings, the accelerator gathers each chunk of batches into a
    buffer its thread keeps: a new 6.4 MB tensor per chunk was a mapping of its own, page-faulted
    in at every chunk (46 faults per step). In a process of its own: the settings last the
    process's life."""
    assert_prints_ok("""
import resource
from bnviz.malloc import glibc, limit_malloc_arenas
limit_malloc_arenas()
from bnviz.data import load_mnist
from bnviz.models import PAPER_HIDDEN, ModelConfig
from bnviz.train import Run, TrainConfig, configure_torch_threads
configure_torch_threads()
if glibc() is not None:
    run = Run(ModelConfig(hidden=PAPER_HIDDEN, activation="sigmoid", norm="batch"), TrainConfig(steps=1400, eval_every=10_000), load_mnist("cpu"))
    run.advance(200)  # the first chunks fill the arena
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    run.advance(1020)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults / 1020 < 5, f"{faults / 1020:.1f} page faults per step"
print("ok")
""", timeout=180)


def test_corrupted_rows_read_as_the_patched_whole_set_without_a_float_copy(mnist):
    """The distribution-shift page's corrupted scans over the whole training set: a few rows
    replaced when indexed (no 188 MB float copy), every index as the patched copy gives it."""
    from bnviz.data import ReplacedRows, StandardisedImages

    base = StandardisedImages(mnist.train_x.pixels[:500])
    where = torch.tensor([3, 77, 401])
    blanks = torch.full((3, 1, 28, 28), float("nan"))
    patched = ReplacedRows(base, where, blanks)
    copy = base.materialise().clone()
    copy[where] = blanks
    index = torch.randperm(500, generator=torch.Generator().manual_seed(0))
    for key in (index[:60], index[:120].reshape(2, 60), slice(None), slice(70, 80), torch.arange(500) % 7 == 0):
        assert torch.equal(patched[key], copy[key]) or torch.allclose(patched[key], copy[key], equal_nan=True), key
    assert torch.allclose(patched[77], copy[77], equal_nan=True) and torch.equal(patched[5], copy[5])
    assert torch.allclose(patched.materialise(), copy, equal_nan=True) and len(patched) == 500
    assert patched.pixels is base.pixels  # the uint8 pixels are shared, not copied


def test_the_loaded_modules_are_frozen_and_later_garbage_is_still_collected():
    """bnviz.app freezes what the core's import created (Streamlit's full collection after every
    script run then skips those ~400,000 objects); a reference cycle made afterwards is still
    collected. In a process of its own: a freeze is for the process's life."""
    script = (
        "import gc, weakref, torch, pandas, altair, bnviz.app as app\n"
        "app._freeze_loaded_objects()\n"
        "assert gc.get_freeze_count() > 100_000, gc.get_freeze_count()\n"
        "class Node: pass\n"
        "a, b = Node(), Node(); a.other, b.other = b, a\n"
        "alive = weakref.ref(a); del a, b\n"
        "gc.collect(2); assert alive() is None\n"
        "print('ok')\n"
    )
    assert_prints_ok(script)


def test_runs_on_the_same_training_subset_share_one_uint8_copy_with_the_same_batches(mnist):
    """train_examples: the subset stays uint8 and is shared by the runs of one seed (the
    regularization section at its maxima held 60 float copies); its images are the float subset's."""
    from bnviz.data import _subset_index, first_examples
    from bnviz.models import ModelConfig
    from bnviz.train import Run, TrainConfig

    train = TrainConfig(steps=1, batch_size=8, train_examples=500, seed=3)
    model = ModelConfig(hidden=(8,))
    first, second = Run(model, train, mnist), Run(model.replace(norm="batch"), train, mnist)
    assert first.train_x is second.train_x and first.train_x.pixels.dtype == torch.uint8 and len(first.train_x) == 500
    chosen = _subset_index(60000, 500, seed=3)
    assert torch.equal(first.train_x[torch.arange(500)], mnist.train_x[chosen]) and torch.equal(first.train_y, mnist.train_y[chosen])
    assert torch.equal(first_examples(mnist.train_x.pixels, mnist.train_y, 500, seed=3)[0], first.train_x.pixels)  # first_examples' subset
    other_seed = Run(model, TrainConfig(steps=1, batch_size=8, train_examples=500, seed=4), mnist)
    assert other_seed.train_x is not first.train_x
