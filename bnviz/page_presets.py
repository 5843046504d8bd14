"""Each page's classroom presets as URL queries: which control holds which config field.

An experiment's presets (``Experiment.presets``) are configs; a page builds its
config from controls whose values live in the URL (``bnviz.app.Controls``). This
table says, for each page, which URL key holds which config field (or how a
config becomes a control's value), so ``bnviz.app.preset_links`` can offer every
preset as a button and as a link, and ``tests/test_page_presets.py`` can check
that each preset's query makes the page build exactly that preset's config.

A preset sets the controls that any preset of its experiment changes (so
switching presets undoes the previous one); the others stay as the user set
them after a click, and at their defaults when the preset's link is opened.

A page may also have *lessons* (:class:`Lesson`): a preset (or the default view)
with controls and sections hidden (``?hide=key1,key2``) and the prediction
question asked first (``?predict=1``), a lecturer's link in one click. When a
page has lessons, every preset sets ``hide`` and ``predict`` too (empty, off),
so leaving a lesson for a preset undoes it. :func:`class_link` writes the link
the page's "Link for your class" builder shows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence
from urllib.parse import urlencode

from .experiments import get_experiment

# A config field's name, or a function config -> the value its control holds.
Field = str | Callable[[Any], Any]
DEFAULT_VIEW = "Default view"
HIDE_KEY = "hide"  # ``?hide=seed,lr,stepper``: the controls and sections a teacher's link hides
PREDICT_KEY = "predict"  # ``?predict=1``: the page asks its question before showing the result (bnviz.predictions)


def hidden_keys(raw: str | None) -> frozenset[str]:
    """The keys a ``hide`` value names: comma-separated, spaces and empty parts ignored."""
    return frozenset(part.strip() for part in (raw or "").split(",") if part.strip())


def class_link(page_url: str, settings: dict[str, str], hide: Sequence[str] = (), predict: bool = False) -> str:
    """The page's link with its current ``settings`` (URL key -> text), ``hide`` and ``predict``:
    what the "Link for your class" builder gives a lecturer. Keys in ``hide`` keep their order."""
    query = {key: value for key, value in settings.items() if key not in (HIDE_KEY, PREDICT_KEY)}
    return PagePresets.link(page_url, {**query, HIDE_KEY: ",".join(hide), PREDICT_KEY: predict})


@dataclass(frozen=True)
class Lesson:
    """A classroom preset for a lecture: ``preset`` (an experiment preset's name; None: the
    default view) with the controls and sections ``hide`` names hidden and, if ``predict``,
    the page's question asked before its result."""

    preset: str | None = None
    hide: tuple[str, ...] = ()
    predict: bool = False


def control_value(config, field: Field):
    return field(config) if callable(field) else getattr(config, field)


def url_text(value) -> str:
    """A control value as ``Controls`` writes it into the URL."""
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


@dataclass(frozen=True)
class PagePresets:
    scope: str  # the page's Controls scope (session-state keys are "<scope>.<URL key>")
    fields: dict[str, dict[str, Field]]  # experiment name -> {URL key: config field}
    lessons: dict[str, Lesson] = field(default_factory=dict)  # name -> a lecture's preset (hide, predict)

    def preset_keys(self, experiment: str) -> list[str]:
        """The URL keys some preset of ``experiment`` sets to a non-default value."""
        spec = get_experiment(experiment)
        default = spec.default_config()
        return [
            key for key, field in self.fields[experiment].items()
            if any(control_value(preset, field) != control_value(default, field) for preset in spec.presets.values())
        ]

    def queries(self) -> dict[str, tuple[str | None, dict[str, Any]]]:
        """``{preset name: (experiment, {URL key: control value})}``, the default view first,
        the lessons last (experiment None: not one experiment's preset; the default view puts
        every preset key of the page back to its default)."""
        default_view: dict[str, Any] = {}
        presets: dict[str, tuple[str | None, dict[str, Any]]] = {}
        for experiment, fields in self.fields.items():
            spec = get_experiment(experiment)
            keys = self.preset_keys(experiment)
            default_view.update({key: control_value(spec.default_config(), fields[key]) for key in keys})
            for name, config in spec.presets.items():
                presets[name] = (experiment, {key: control_value(config, fields[key]) for key in keys})
        if not presets:
            return {}
        queries = {DEFAULT_VIEW: (None, default_view), **presets}
        if self.lessons:
            queries = {name: (experiment, {**query, HIDE_KEY: "", PREDICT_KEY: False}) for name, (experiment, query) in queries.items()}
            for name, lesson in self.lessons.items():
                base = queries[lesson.preset or DEFAULT_VIEW][1]
                queries[name] = (None, {**base, HIDE_KEY: ",".join(lesson.hide), PREDICT_KEY: lesson.predict})
        return queries

    @staticmethod
    def link(page_url: str, query: dict[str, Any]) -> str:
        """``page_url?key=value&...``; an empty ``hide`` and a ``predict`` that is off are left out."""
        query = {key: value for key, value in query.items() if not (key in (HIDE_KEY, PREDICT_KEY) and not value)}
        if PREDICT_KEY in query:
            query[PREDICT_KEY] = "1"
        return f"{page_url}?{urlencode({key: url_text(value) for key, value in query.items()})}" if query else page_url


def _lr_range(config) -> tuple:
    return (min(config.lrs), max(config.lrs))


def _paper_init(config) -> str:
    from .experiments.paper_figure1 import init_choice

    return init_choice(config)


def _paper_axis(config) -> bool:
    """The paper's accuracy axis is on for the paper's full-length run (a view, not a config field)."""
    from .train import PAPER_STEPS

    return config.steps == PAPER_STEPS


def _sweep(config) -> str:
    from .experiments.norm_comparison import FULL_BATCH_SIZES

    return "full" if tuple(config.batch_sizes) == tuple(FULL_BATCH_SIZES) else "light"


def _sizes(config) -> str:
    from .experiments.small_batches import FULL_BATCH_SIZES, LIGHT_BATCH_SIZES

    return {tuple(FULL_BATCH_SIZES): "full", tuple(LIGHT_BATCH_SIZES): "light"}.get(tuple(config.batch_sizes), "default")


# page (its file stem in app_pages/) -> its presets' URL keys
PAGE_PRESETS: dict[str, PagePresets] = {
    "home": PagePresets("home", {"home": {"act": "activation", "lr": "lr", "steps": "steps", "seed": "seed"}},
                        lessons={"Quiz: predict first": Lesson(hide=("seed",), predict=True)}),
    "normalization_math": PagePresets("math", {"normalization_math": {
        "source": "source", "layer": "layer", "trained": "train_steps", "mean": "mean", "spread": "spread", "skew": "skew",
        "outliers": "outliers", "constant": "constant_neuron", "batch": "batch_size", "draw": "batch_seed",
        "neuron": "first_neuron", "eps": "eps", "gamma": "gamma", "beta": "beta", "momentum": "momentum",
    }}),
    "train_vs_eval": PagePresets("traineval", {
        "train_vs_eval": {"mom": "bn_momentum", "bs": "batch_size", "lr": "lr", "steps": "steps", "img": "image_index"},
        "batch_noise_regularization": {"regn": "train_examples", "regsteps": "steps", "seeds": "num_seeds"},
    }),
    "paper_results": PagePresets("paper", {
        "paper_figure1": {"steps": "steps", "lr": "lr", "init": _paper_init, "bin": "binarise", "opt": "optimizer", "seed": "seed", "seeds": "seeds", "axis": _paper_axis},
        "paper_lr_claims": {"base_lr": "base_lr", "lr_steps": "steps"},
    }),
    "distribution_shift": PagePresets("shift", {"distribution_shift": {
        "shift": "shift", "strength": "strength", "n": "train_examples", "depth": "depth", "width": "width", "bn": "placement",
        "eps": "eps", "precision": "precision", "corrupt": "corrupted_examples", "steps": "steps", "seed": "seed",
    }}),
    "bn_vs_layernorm": PagePresets("norms", {
        "norm_comparison": {"arch": "arch", "sweep": _sweep, "seeds": "seeds", "steps": "steps"},
        "sequence_norms": {"rnn_steps": "steps", "rnn_hidden": "hidden", "rnn_seed": "seed"},
    }),
    "small_batches": PagePresets("small", {
        "small_batches": {"sizes": _sizes, "seeds": "seeds", "steps": "steps", "v": "ghost_batch_size", "r_max": "r_max", "d_max": "d_max"},
        "bessel_mismatch": {"depth": "depth", "width": "width", "b_steps": "steps", "eps": "eps"},
    }),
    "placement": PagePresets("placement", {"placement": {
        "act": "activation", "opt": "optimizer", "depth": "depth", "width": "width", "lr": _lr_range,
        "batch": "batch_size", "seeds": "seeds", "steps": "steps",
    }}, lessons={"Learning rates only": Lesson(hide=("act", "opt", "depth", "width", "batch", "seeds", "steps"))}),
    "common_pitfalls": PagePresets("pitfalls", {
        "forward_pass_pitfall": {"pass": "pass_over", "pass_batch": "pass_batch_size", "fp_seeds": "seeds", "fp_steps": "steps"},
        "label_shift": {"shift": lambda c: c.model.shift, "strength": lambda c: c.model.strength, "ls_steps": lambda c: c.model.steps, "ls_seeds": "seeds", "tent": "tent_steps"},
        "init_gradients": {"width": "width", "ig_batch": "batch_size", "ig_seeds": "seeds"},
        "bn_switches": {"sw_steps": "steps", "sw_lr": "lr", "sw_seeds": "seeds"},
    }, lessons={"Quiz: does no_grad protect BN?": Lesson(predict=True)}),
    "why_bn_works": PagePresets("why", {
        "why_noisy_bn": {"n_act": "activation", "n_lr": "lr", "n_steps": "steps", "noise": "noise_strength", "n_seed": "seed", "n_seeds": "seeds"},
        "why_probes": {"p_act": "activation", "p_lr": "lr", "p_steps": "steps", "every": "probe_every", "eta": "max_multiplier",
                       "noisy": "with_noisy", "p_seed": "seed", "p_seeds": "seeds"},
    }),
}


# page -> {section key: what the section shows}: the keys of the sections each page draws as
# its own fragment (``bnviz.app.section``), in the page's order. A teacher's link hides one
# with ``?hide=KEY`` (several: ``?hide=KEY1,KEY2``), and a control-hiding UI lists them from
# here. A key is short and stable (links carry it) and never one of the page's control URL
# keys; the page tests hold each page to its entry (``tests/apptest_helpers.sections_drawn``).
PAGE_SECTIONS: dict[str, dict[str, str]] = {
    "normalization_math": {
        "steps": "Step by step: eq. (1)-(4) on one neuron",
        "regimes": "γ and β choose the regime of the nonlinearity",
        "epsilon": "ε: what guards the division",
        "bias": "A bias before BN is redundant",
        "running": "Running statistics",
        "backward": "The backward pass",
        "conventions": "Framework conventions",
        "stepper": "Play / pause / step while the network trains",
    },
    "train_vs_eval": {
        "stats": "Batch statistics, running estimates and the truth",
        "mates": "Batch-mates: one image, many batches",
        "accuracy": "Test accuracy three ways",
        "regularization": "Batch noise as a regularizer",
        "precise": "PreciseBN",
    },
    "paper_results": {
        "figure1": "Figure 1, reproduced",
        "lr_claims": "The ImageNet claims, in miniature",
    },
    "distribution_shift": {
        "evaluation": "Evaluation on the shifted data",
        "units": "Unit by unit: who explodes",
        "nan": "A real NaN: where it comes from",
        "fixes": "The fixes, compared",
        "few": "Adapting with few target images",
    },
    "common_pitfalls": {
        "forward_pass": "The forward pass that changed my model",
        "label_shift": "Label-shifted test batches",
        "init_grads": "BN at initialization in deep plain networks",
        "switches": "The textbook's exercises as switches",
    },
    "bn_vs_layernorm": {
        "axes": "Which values share one mean and variance",
        "batch_sweep": "Batch size: where BN loses",
        "consistency": "The same digit in train and eval mode",
        "summary": "Summary table",
        "rnn": "Sequences: a recurrent network",
        "invariance": "What each norm ignores (Ba et al.'s table)",
    },
    "small_batches": {
        "batch_sweep": "Small batches: Batch Renorm, ghost BN, GroupNorm, LayerNorm",
        "bessel": "The Bessel factor",
    },
    "placement": {
        "lr_sweep": "Which placement tolerates larger learning rates",
        "inputs": "What enters the nonlinearity",
    },
    "why_bn_works": {
        "noisy_bn": "(1) Noisy BN",
        "probes": "Probing training: ICS, interdependency, landscape",
    },
}
