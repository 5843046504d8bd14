"""Hypotheses (1)-(3) probed between training steps (Santurkar et al. 2018, Sec. 2.2 and 3.1).

No BN and BN (optionally noisy BN) train on the same batches; every
``probe_every`` steps the step's batch is re-run by three probes
(:mod:`bnviz.probes`): internal covariate shift in their optimisation sense
(Definition 2.1), the loss landscape along the gradient (Sec. 3.1), and how
far a change of the first layer reaches the layers above (hypothesis 2).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..budget import check_view_cost, training_cost
from ..config import Config, check
from ..data import load_mnist
from ..models import ACTIVATIONS, PAPER_HIDDEN, ModelConfig
from ..probes import InternalCovariateShift, LossLandscape, LowerLayerChange
from ..results import Comparison, SeededComparison, first_seed_progress as _first_seed
from ..train import PAPER_BATCH_SIZE, ProgressFn, Run, TrainConfig, TrainResult, pick_device, train_together
from ..verdicts import judge
from . import Experiment

# Santurkar et al. 2018, Fig. 4: steps along the gradient of 0.5x to 4x the learning rate.
STEP_MULTIPLIERS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
PAPER_MAX_MULTIPLIER = 4.0
PROBE_PASSES = 15  # passes of a batch one probe costs a model (the page's help says so)


@dataclass(frozen=True)
class ProbesConfig(Config):
    """The paper's MLP with ReLU (Santurkar et al. probe ReLU networks: VGG), plain SGD;
    probes every ``probe_every`` steps.

    ``max_multiplier``: the landscape probe steps eta = m * lr for m in
    0.5, 1, 2, 4, ... up to it. ``with_noisy``: also probe noisy BN.
    """

    hidden: tuple[int, ...] = PAPER_HIDDEN
    activation: str = "relu"
    steps: int = 300
    batch_size: int = PAPER_BATCH_SIZE
    lr: float = 0.5
    probe_every: int = 20
    max_multiplier: float = PAPER_MAX_MULTIPLIER
    with_noisy: bool = False
    seed: int = 0
    eval_every: int = 25
    seeds: int = 3  # seeds seed .. seed + seeds - 1: the charts show the first, the scoreboard's verdicts use all

    def __post_init__(self):
        check(2 <= len(self.hidden) <= 6, "Choose 2 to 6 hidden layers (ICS needs a layer below a layer).")
        check(self.activation in ACTIVATIONS, f"activation must be one of {', '.join(ACTIVATIONS)}.")
        check(20 <= self.steps <= 20_000, "steps must be between 20 and 20,000.")
        check(1 <= self.seeds <= 10, "Choose 1 to 10 seeds (3 or more give the scoreboard an interval).")
        check(1 <= self.probe_every <= self.steps, "probe every 1 step up to once per run.")
        check(self.max_multiplier in STEP_MULTIPLIERS[1:], f"max_multiplier must be one of {', '.join(map(str, STEP_MULTIPLIERS[1:]))}.")
        # the built configs check what they hold: widths, batch size, learning rate, eval_every
        self.models(), self.train_config()
        check_view_cost(self, "fewer steps or probes (probe less often)")

    def cost(self) -> float:
        """Reference steps this config trains (``bnviz.budget``)."""
        # each probe: about PROBE_PASSES forward and backward passes of a batch per model (ICS, the landscape's step sizes, the gradients)
        probes = self.steps // self.probe_every * PROBE_PASSES
        return training_cost((model, train.replace(steps=train.steps + probes)) for model, train in self.runs())

    def runs(self) -> list[tuple[ModelConfig, TrainConfig]]:
        """What :func:`run` trains: every model of :meth:`models` at each seed, seed by seed."""
        return [(model, self.train_config(seed)) for seed in range(self.seed, self.seed + self.seeds) for model in self.models()]

    @property
    def multipliers(self) -> tuple[float, ...]:
        return tuple(m for m in STEP_MULTIPLIERS if m <= self.max_multiplier)

    def models(self) -> list[ModelConfig]:
        base = ModelConfig(hidden=self.hidden, activation=self.activation)
        norms = ("none", "batch", "noisy_batch") if self.with_noisy else ("none", "batch")
        return [base.replace(norm=norm) for norm in norms]

    def train_config(self, seed: int | None = None) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, seed=self.seed if seed is None else seed, eval_every=self.eval_every)

    def probes(self) -> list:
        return [
            InternalCovariateShift(self.probe_every),
            LossLandscape(self.lr, self.probe_every, self.multipliers),
            LowerLayerChange(self.probe_every),
        ]


def run(config: ProbesConfig, progress: ProgressFn | None = None) -> Comparison:
    data = load_mnist(str(pick_device()))
    runs = [Run(model, train, data, config.probes()) for model, train in config.runs()]
    models = len(config.models())
    return SeededComparison.from_seeds(train_together(runs, _first_seed(progress, models)), models)


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmedian(values)) if np.isfinite(values).any() else float("nan")


def measures(run: TrainResult) -> dict[str, float]:
    """The few numbers the scoreboard compares, each a median over probe steps (NaN-safe).

    ``ics_l2`` and ``ics_cosine``: over probes and layers; ``ics_relative``:
    ||G - G'|| / ||G||; ``loss_range``: max - min of L(w - eta g) over eta;
    ``grad_change``: the largest ||grad change|| over eta; ``beta``: effective
    beta-smoothness; ``lower_change``: the largest relative change of the
    last hidden layer's output under the first layer's changes (last probe).
    """
    r = run.records
    if r["ics_step"].size == 0:
        return {k: float("nan") for k in ("ics_l2", "ics_cosine", "ics_relative", "loss_range", "grad_change", "beta", "lower_change")}
    with np.errstate(invalid="ignore", divide="ignore"):
        relative = r["ics_l2"] / r["ics_grad_norm"]
        loss_range = np.nanmax(r["landscape_loss"], axis=1) - np.nanmin(r["landscape_loss"], axis=1) if np.isfinite(r["landscape_loss"]).any() else np.array([np.nan])
        grad_change = np.nanmax(r["landscape_grad_change"], axis=1) if np.isfinite(r["landscape_grad_change"]).any() else np.array([np.nan])
    return {
        "ics_l2": _median(r["ics_l2"]),
        "ics_cosine": _median(r["ics_cosine"]),
        "ics_relative": _median(relative),
        "loss_range": _median(loss_range),
        "grad_change": _median(grad_change),
        "beta": _median(r["landscape_beta"]),
        "lower_change": float(np.nanmax(r["lower_change_rel"][-1])) if r["lower_change_rel"].size else float("nan"),
    }


def summarize(result: Comparison) -> dict:
    summary = result.summary()
    for run in result.runs:
        summary[run.label].update({k: round(v, 5) for k, v in measures(run).items()})
    return summary


EXPERIMENT = Experiment(
    name="why_probes",
    title="Why does BN work? (2) probes: ICS, loss landscape, layer interdependency",
    summary="No BN vs BN, probed every k steps: internal covariate shift (Santurkar et al. 2018, Def. 2.1), loss and gradient change along the gradient, and a first-layer change's reach.",
    config_type=ProbesConfig,
    run=run,
    order=61,
    presets={
        "With noisy BN": ProbesConfig(with_noisy=True),
        "Longer, finer probes": ProbesConfig(steps=1500, probe_every=10),
        "Sigmoid network (as the noisy-BN experiment)": ProbesConfig(activation="sigmoid"),
    },
    summarize=summarize,
)


# A ratio counts only beyond SIMILAR (the whole 95% interval over seeds); an accuracy gap beyond a point.
SIMILAR = 1.25
ACCURACY_POINTS_SAME = 1.0
# A relative change below UNCHANGED is rounding and eps; above CHANGED, a visible change.
UNCHANGED, CHANGED = 1e-3, 1e-2


def number(value: float, spec: str) -> str:
    """``value`` formatted with ``spec``; "n/a" for NaN or inf (a diverged run)."""
    return format(value, spec) if np.isfinite(value) else "n/a"


def _diverged_note(runs: list[TrainResult]) -> str:
    return "; ".join(f"{run.label} diverged at step {run.diverged_step}" for run in runs if run.diverged)


def _per_seed(result: Comparison, label: str, measure) -> np.ndarray:
    """One number per seed of one model: ``measure(run)`` over ``result.arm(label)``."""
    runs = result.arm(label) if isinstance(result, SeededComparison) else [result.by_label(label)]
    return np.array([measure(run) for run in runs], dtype=float)


def _word(verdict) -> str:
    return verdict.label


def scoreboard(noisy: Comparison, probes: Comparison) -> list[dict[str, str]]:
    """One line per hypothesis: what it predicts, what the runs measured, the verdict.

    Every verdict word comes from :func:`bnviz.verdicts.judge` over the seeds
    (paired by seed): (1) BN's final accuracy over noisy BN's, margin
    :data:`ACCURACY_POINTS_SAME` points; (1′) no BN's relative ICS over BN's and
    (3) no BN's effective β-smoothness over BN's (Santurkar et al.'s measure), as
    ratios with margin :data:`SIMILAR`. (2) is not evidence: BN's invariance to a
    rescale or shift of the layer below holds by construction (while BN uses
    batch statistics); the row says whether the construction check held
    (change below :data:`UNCHANGED`). A diverged run gives "no verdict".
    """
    from .why_noisy_bn import drift

    rows = []
    bn, noisy_bn, plain = noisy.by_label("BN"), noisy.by_label("noisy BN"), noisy.by_label("no BN")
    bn_drift, noisy_drift = drift(bn)[0], drift(noisy_bn)[0]
    drift_ratio = noisy_drift / bn_drift if bn_drift > 0 else float("inf")
    accuracy = {label: _per_seed(noisy, label, lambda r: r.final_test_acc) for label in ("BN", "noisy BN", "no BN")}
    worse = judge("noisy BN trains clearly worse than BN", accuracy["BN"], accuracy["noisy BN"], margin=ACCURACY_POINTS_SAME, unit="points", display_scale=100)
    noisy_seed_runs = noisy.arm("BN") + noisy.arm("noisy BN") if isinstance(noisy, SeededComparison) else [bn, noisy_bn]
    if any(r.diverged for r in noisy_seed_runs):
        how, verdict = _diverged_note(noisy_seed_runs), "no verdict"
    elif not drift_ratio > SIMILAR:
        how, verdict = "the noise did not make its inputs less stable (noise strength 0?)", "not tested"
    else:
        how, verdict = worse.rule, _word(worse)
    rows.append({
        "hypothesis": "(1) BN works by keeping layer inputs stable (less covariate shift)",
        "if true": f"noisy BN, whose layer inputs are shaken at every step, trains clearly worse than BN (by more than {ACCURACY_POINTS_SAME:g} point)",
        "measured": f"noisy BN's unit means move {number(drift_ratio, ',.0f')}× as much per step as BN's (seed {bn.train.seed}); final accuracy, mean over "
        f"{len(accuracy['BN'])} seed{'s' if len(accuracy['BN']) != 1 else ''}: noisy BN {number(100 * accuracy['noisy BN'].mean(), '.1f')}%, BN {number(100 * accuracy['BN'].mean(), '.1f')}%, "
        f"no BN {number(100 * accuracy['no BN'].mean(), '.1f')}%. BN minus noisy BN: {how}",
        "verdict": verdict,
    })

    plain_run, bn_run = probes.by_label("no BN"), probes.by_label("BN")
    p_plain, p_bn = measures(plain_run), measures(bn_run)
    probe_seed_runs = probes.arm("no BN") + probes.arm("BN") if isinstance(probes, SeededComparison) else [plain_run, bn_run]
    diverged = _diverged_note(probe_seed_runs)

    def verdict_or_none(value: str) -> str:
        return "no verdict" if diverged else value

    def note(words: str) -> str:
        return f"({diverged})" if diverged else f"({words})"

    def ratio_verdict(claim: str, key: str):
        return judge(claim, _per_seed(probes, "BN", lambda r: measures(r)[key]), _per_seed(probes, "no BN", lambda r: measures(r)[key]), margin=SIMILAR, scale="ratio", higher_is_better=False, decimals=2)

    ics = ratio_verdict("BN's layer gradients change less when the layers below move", "ics_relative")
    rows.append({
        "hypothesis": "(1′) BN reduces internal covariate shift in the optimisation sense (Santurkar et al. Def. 2.1)",
        "if true": f"BN's gradients change less when the layers below take their step: ‖G − G′‖/‖G‖ smaller by more than {SIMILAR:g}×",
        "measured": f"‖G − G′‖/‖G‖ BN {number(p_bn['ics_relative'], '.3f')} vs no BN {number(p_plain['ics_relative'], '.3f')} (seed {bn_run.train.seed}); "
        f"cosine BN {number(p_bn['ics_cosine'], '.3f')} vs no BN {number(p_plain['ics_cosine'], '.3f')}; no BN over BN: {note(ics.rule)}",
        "verdict": verdict_or_none(_word(ics)),
    })

    bn_moved, plain_moved = p_bn["lower_change"], p_plain["lower_change"]
    holds = bn_moved < UNCHANGED
    plain_words = "changed" if plain_moved > CHANGED else "barely changed"
    rows.append({
        "hypothesis": "(2) BN cuts the interdependency between layers",
        "if true": "rescaling or shifting the first layer leaves BN's upper layers unchanged; without BN they move",
        "measured": f"a guarantee of BN's construction, BN((cW)x + cb) = BN(Wx + b), not evidence for the hypothesis: largest relative change of the "
        f"last hidden layer BN {number(bn_moved, '.1e')} ({'below' if holds else 'not below'} {UNCHANGED:g}: rounding and ε), "
        f"no BN {number(plain_moved, '.1e')} {note(plain_words)}",
        "verdict": verdict_or_none("holds by construction" if holds else "construction check failed"),
    })

    beta = ratio_verdict("BN's effective β-smoothness is lower", "beta")
    rows.append({
        "hypothesis": "(3) BN makes the loss landscape smoother (Santurkar et al.)",
        "if true": f"BN's effective β-smoothness (Santurkar et al.'s measure: the largest gradient change per distance moved along the gradient) is lower by more than {SIMILAR:g}×",
        "measured": f"effective β BN {number(p_bn['beta'], '.2f')} vs no BN {number(p_plain['beta'], '.2f')} (seed {bn_run.train.seed}); no BN over BN: {note(beta.rule)} "
        f"For context (not judged): loss range along the gradient BN {number(p_bn['loss_range'], '.3f')} vs no BN {number(p_plain['loss_range'], '.3f')}; "
        f"largest gradient change BN {number(p_bn['grad_change'], '.2f')} vs no BN {number(p_plain['grad_change'], '.2f')}",
        "verdict": verdict_or_none(_word(beta)),
    })
    return rows
