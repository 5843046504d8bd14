"""The distribution-shift experiment: the NaN routes are real, the checks match closed forms, the fixes work."""
import math

import pytest
import torch
from torch import nn

from bnviz.bn_debug import check_running_stats, norm_outputs
from bnviz.experiments.distribution_shift import ShiftConfig, blank_scans_standardised, run, training_data
from bnviz.train import Run

SMALL = dict(steps=80, train_examples=300, depth=2, width=32, test_examples=300)


def test_a_blank_scan_standardised_per_image_is_nan():
    assert torch.isnan(blank_scans_standardised(2, "cpu")).all()


@pytest.fixture(scope="module")
def corrupted_result(mnist):
    return run(ShiftConfig(corrupted_examples=10, **SMALL))


def test_corrupted_images_give_nan_in_eval_mode_only(corrupted_result):
    r = corrupted_result
    assert r.corrupted_steps, "the corrupted images must have been drawn"
    assert r.running_stats[0]["nonfinite_units"] == 32
    for data in ("clean", "shifted"):
        assert r.mode(data, "eval")["nonfinite_outputs"] == 300  # every eval-mode output is NaN
        assert r.mode(data, "train")["nonfinite_outputs"] == 0  # batch statistics never read the buffers
    assert r.mode("clean", "train")["accuracy"] > 0.5  # training went on normally


def test_recalibration_and_the_pipeline_fix_remove_the_nan(corrupted_result):
    r = corrupted_result
    assert r.fix("none: population statistics")["nonfinite_outputs"] == 300
    for name in ("re-estimate on clean training data (precise BN)", "re-estimate on the shifted data (AdaBN)",
                 "batch statistics at evaluation", "training loop restores BN statistics on skipped steps (retrained)",
                 "LayerNorm instead of BN (retrained)", "GroupNorm instead of BN (retrained)"):
        assert r.fix(name)["nonfinite_outputs"] == 0, name


def test_nonfinite_loss_policies_of_the_trainer(mnist):
    config = ShiftConfig(corrupted_examples=20, **SMALL)
    data, _ = training_data(config, mnist)
    stopped = Run(config.model(), config.train_config("stop"), data)
    stopped.advance(config.steps)
    assert stopped.result(final=False).diverged
    for policy, finite in (("skip", False), ("rollback", True)):
        trained = Run(config.model(), config.train_config(policy), data)
        trained.advance(config.steps)
        assert trained.skipped_steps and trained.step == config.steps
        assert bool(torch.isfinite(trained.model.blocks[0].norm.running_mean).all()) is finite
        assert all(torch.isfinite(p).all() for p in trained.model.parameters())  # skipped updates never touch weights


def _bn_then_mix(running_var: float, eps: float) -> nn.Sequential:
    """BN with a given running variance, then a layer summing +x and -x: inf - inf = NaN when x overflows."""
    bn = nn.BatchNorm1d(1, eps=eps)
    bn.running_var.fill_(running_var)
    mix = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        mix.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    head = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        head.weight.fill_(1.0)
    return nn.Sequential(bn, mix, head).eval()


def test_float16_overflow_gives_nan_at_the_closed_form_threshold():
    eps = 1e-8  # amplification 1/sqrt(eps) = 10,000 for a unit with running variance 0
    x = torch.tensor([[7.0], [6.0]])  # 70,000 overflows float16 (max 65,504); 60,000 does not
    outputs, logits = norm_outputs(_bn_then_mix(0.0, eps), x, dtype=torch.float16)
    assert math.isinf(outputs[0][0, 0].item()) and math.isnan(logits[0, 0].item())
    assert math.isfinite(outputs[0][1, 0].item()) and math.isfinite(logits[1, 0].item())
    _, logits32 = norm_outputs(_bn_then_mix(0.0, eps), x, dtype=torch.float32)
    assert torch.isfinite(logits32).all()


def test_check_running_stats_and_eval_outputs_match_the_formula():
    model = _bn_then_mix(0.04, 1e-5)
    bn = model[0]
    bn.running_mean.fill_(0.5)
    [row] = check_running_stats(model)
    assert row["max_amplification"] == pytest.approx(1 / math.sqrt(0.04 + 1e-5))
    assert row["units_var_below_eps"] == 0 and row["nonfinite_units"] == 0
    x = torch.randn(50, 1, dtype=torch.float64)
    outputs, _ = norm_outputs(model.double(), x, dtype=torch.float64)
    assert torch.allclose(outputs[0].double(), (x - 0.5) / math.sqrt(0.04 + 1e-5), atol=1e-5)
    before = bn.running_mean.clone()
    norm_outputs(model, x, train_mode=True, dtype=torch.float64)
    assert torch.equal(bn.running_mean, before)  # train-mode probing leaves the model's statistics untouched


def test_the_first_inf_and_the_first_nan_are_traced_to_their_layers():
    """BN overflows to inf; the next layer holds +inf and -inf (no NaN); the layer after sums them: NaN
    appears two layers after the inf, and the sentence says so, not "the next layer"."""
    from bnviz.bn_debug import first_nonfinite
    from bnviz.experiments.distribution_shift import nonfinite_sentence

    trace = first_nonfinite(_bn_then_mix(0.0, 1e-8), torch.tensor([[7.0], [6.0]]), torch.float16)
    assert (trace["inf_layer"], trace["inf_count"], trace["nan_layer"], trace["nan_count"], trace["layers_between"]) == ("0", 1, "2", 1, 2)
    sentence = nonfinite_sentence(trace, 1e-8)
    assert "`0` (1 values)" in sentence and "`2`" in sentence and "2 layers later" in sentence
    assert first_nonfinite(_bn_then_mix(0.0, 1e-8), torch.tensor([[6.0]]), torch.float16)["inf_layer"] is None
    assert nonfinite_sentence({}, 1e-8) == ""


def test_corrupting_the_whole_training_set_patches_rows_without_a_float_copy(mnist):
    """The page's default (all 60,000 images) with corrupted scans: the rows are replaced when
    read (bnviz.data.ReplacedRows; a float copy of the set would be 188 MB at once), the
    corrupted ones read NaN, the others the clean images, and training skips exactly those steps."""
    from bnviz.data import ReplacedRows, load_mnist

    config = ShiftConfig(corrupted_examples=1000, steps=20, depth=2, width=32, test_examples=300)
    train_data, clean_x = training_data(config, load_mnist("cpu"))
    assert isinstance(train_data.train_x, ReplacedRows) and train_data.train_x.pixels is clean_x.pixels
    corrupted = torch.isnan(train_data.train_x.materialise()).flatten(1).all(dim=1)
    assert int(corrupted.sum()) == 1000
    rows = torch.arange(60_000)[~corrupted][:500]
    assert torch.equal(train_data.train_x[rows], clean_x[rows])
    r = run(config)  # about one corrupted image per batch of 60
    assert r.corrupted_steps and r.running_stats[0]["nonfinite_units"] == 32
    assert r.mode("clean", "eval")["nonfinite_outputs"] == 300


def test_shifts_computed_in_place_equal_their_textbook_expressions_bit_for_bit():
    """shift_images works on one float copy in place (no four temporaries of the test set);
    the numbers are the plain expressions', bit for bit."""
    from bnviz.data import MNIST_PIXEL_MEAN as MEAN, MNIST_PIXEL_STD as STD, shift_images

    x = torch.randn(300, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    for strength in (0.0, 0.3, 1.0):
        pixels = x * STD + MEAN
        noise = torch.randn(pixels.shape, generator=torch.Generator().manual_seed(5))
        expected = {
            "invert": (1 - strength) * pixels + strength * (1.0 - pixels),
            "noise": (pixels + strength * noise).clamp(0.0, 1.0),
            "contrast": 0.5 + (1.0 - strength) * (pixels - 0.5),
        }
        for shift, shifted in expected.items():
            assert torch.equal(shift_images(x, shift, strength, seed=5), (shifted - MEAN) / STD), (shift, strength)


def test_translate_and_rotate_are_torchvisions_bit_for_bit():
    """bnviz's own rotate / affine (no torchvision import at run time: it would import
    torch._dynamo) give torchvision's images exactly, at every strength the page offers."""
    tv = pytest.importorskip("torchvision.transforms.v2.functional")
    from bnviz.data import affine_nearest, rotate_nearest

    x = torch.rand(40, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    for strength in (0.0, 0.05, 0.1, 0.3, 0.5, 0.77, 1.0):
        shift = round(8 * strength)
        assert torch.equal(affine_nearest(x, 0.0, (shift, shift)), tv.affine(x, angle=0.0, translate=[shift, shift], scale=1.0, shear=[0.0])), strength
        assert torch.equal(rotate_nearest(x, 90.0 * strength), tv.rotate(x, angle=90.0 * strength)), strength
    for angle in (-30.0, 180.0, 270.0, 400.0):
        assert torch.equal(rotate_nearest(x, angle), tv.rotate(x, angle=angle)), angle
    assert torch.equal(affine_nearest(x, 25.0, (-3, 2)), tv.affine(x, angle=25.0, translate=[-3, 2], scale=1.0, shear=[0.0]))
    assert torch.equal(rotate_nearest(x[0], 33.0), tv.rotate(x[0], angle=33.0))  # (C, H, W) too
