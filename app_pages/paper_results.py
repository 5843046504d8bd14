"""The original paper's results: Ioffe & Szegedy 2015, Figure 1 and the ImageNet claims in miniature."""
import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import Controls, device_caption, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, source_expander
from bnviz.charts import curve_records
from bnviz.charts.paper import accuracy_chart, lr_curve_records, lr_curves_chart, percentile_chart, percentile_records, steps_to_target_chart
from bnviz.charts.paper import PAPER_ACCURACY_AXIS
from bnviz.experiments.paper_figure1 import (
    ARTICLE_INIT_STD, ARTICLE_LR, BINARY_THRESHOLD, DRIFT_FROM_FRACTION, INIT_CHOICES, MODES, SMALL_INIT_STD, TYPICAL_UNIT, PaperFigure1Config,
    accuracy_verdict, bn_ahead_fraction, deviations, drift_table, drift_verdict, init_choice, median_drift, relative_median_drift, representative_unit,
    steps_to_match,
)
from bnviz.models import PAPER_HIDDEN
from bnviz.verdicts import judge
from bnviz.experiments.paper_lr_claims import PaperLrClaimsConfig, baseline_activation, chance_level_runs, divergence_counts, speedups_by_multiplier, steps_to_target
from bnviz.train import PAPER_BATCH_SIZE, PAPER_STEPS
from bnviz.data import TEST_IMAGES
from bnviz.formatting import format_points

st.title("The original paper's results")
preset_links("paper_results")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "Ioffe & Szegedy, *Batch Normalization: Accelerating Deep Network Training by Reducing Internal Covariate "
    "Shift* (2015, arXiv 1502.03167), Sec. 4.1: a 784-100-100-100-10 network with **sigmoid** units, trained on "
    f"MNIST for **{PAPER_STEPS:,} steps** of mini-batches of **{PAPER_BATCH_SIZE}**, once as is and once with BN "
    "before every nonlinearity. Below, bnviz trains the same two networks, live."
)

defaults = PaperFigure1Config()
controls = Controls("paper")
STEP_CHOICES = [500, 1_000, 2_000, 5_000, 10_000, 20_000, PAPER_STEPS]
INIT_NAMES = {
    "small": f"N(0, {SMALL_INIT_STD:g}²): small Gaussian",
    "normal": f"N(0, {ARTICLE_INIT_STD:g}), as the article's notebook",
    "default": "PyTorch default",
}
with st.expander("Settings of the experiment: network, batch size and plain SGD as in the paper; fewer steps by default", expanded=False):
    c1, c2, c3, c4, c5 = st.columns(5)
    with c1:
        steps = controls.select("Training steps (batches of 60)", "steps", STEP_CHOICES, defaults.steps, slider=True, format_func=lambda s: f"{s:,}")
        st.button(
            f"Use the paper's {PAPER_STEPS:,} steps",
            on_click=lambda: st.session_state.update({"paper.steps": PAPER_STEPS, "paper.axis": True}),
            help=f"{PAPER_STEPS // defaults.steps}× the default's training, once; then cached for everyone. Also turns on the paper's accuracy axis.",
        )
    with c2:
        lr = controls.select(
            "Learning rate (SGD)", "lr", [0.003, ARTICLE_LR, 0.03, 0.1, 0.3, 1.0], defaults.lr, slider=True,
            help=f"The paper does not state it; the article's notebook uses {ARTICLE_LR}. The default here, "
            f"{defaults.lr}, brings the short default run near the paper's accuracy range.",
        )
    with c3:
        init = controls.radio(
            "Initial weights", "init", list(INIT_NAMES), init_choice(defaults), format_func=INIT_NAMES.get,
            help=f"The paper says only 'small random Gaussian values'. N(0, {SMALL_INIT_STD:g}²) is the default (see the list of "
            f"deviations below for why). The article's notebook uses N(0, {ARTICLE_INIT_STD:g}): it saturates the plain network's sigmoids, "
            "which BN undoes. PyTorch's default is small and uniform.",
        )
        binarise = controls.toggle("Binary input images (the paper's)", "bin", defaults.binarise, help=f"On: each pixel is 0 or 1 (on from {BINARY_THRESHOLD} of 255). Off: MNIST's grey levels.")
    with c4:
        optimizer = controls.radio(
            "Optimiser", "opt", ["sgd", "momentum"], defaults.optimizer,
            format_func={"sgd": "plain SGD", "momentum": "SGD + momentum 0.9"}.get,
        )
    with c5:
        seed = controls.slider("First seed", "seed", 0, 9, defaults.seed, help="The charts show this seed; the verdicts use it and the next ones.")
        seeds = controls.slider("Seeds", "seeds", 1, 5, defaults.seeds, help="Verdicts need 2 or more (one seed has no interval); each seed trains both networks.")
config = page_config(defaults, steps=steps, lr=lr, optimizer=optimizer, seed=seed, seeds=seeds, binarise=binarise, **INIT_CHOICES[init])


@section("figure1")
def figure1_section():
    UNIT_CHOICES = [TYPICAL_UNIT, *range(PAPER_HIDDEN[-1])]
    d1, d2, d3, d4 = st.columns([1, 1, 1, 1.4])
    with d1:
        layer = controls.select("Hidden layer shown in (b, c)", "layer", [1, 2, 3], 3, help="The paper shows the last hidden layer (3).")
    with d2:
        unit_choice = controls.select(
            "Unit of that layer", "unit", UNIT_CHOICES, TYPICAL_UNIT,
            format_func=lambda u: "typical (median band width)" if u == TYPICAL_UNIT else str(u),
            help="Typical: the unit whose 15th-85th band is nearest its layer's median width in both networks (the paper shows 'one typical activation').",
        )
    with d3:
        mode = controls.radio("Network mode", "mode", list(MODES), "training", format_func={"training": "training (batch statistics)", "evaluation": "evaluation (running averages)"}.get, help="The paper tracks the network as it trains: BN normalises each batch of 60 by its own statistics.")
    with d4:
        paper_axis = controls.toggle(f"The paper's accuracy axis ({PAPER_ACCURACY_AXIS[0]:g} to {PAPER_ACCURACY_AXIS[1]:g})", "axis", False)
    controls.show_notes()

    st.subheader(f"Figure 1, reproduced: {config.steps:,} steps here, {PAPER_STEPS:,} in the paper")
    metrics = st.container()
    accuracy_slot = st.empty()
    percentile_slot = st.empty()


    def shown_unit(result) -> int:
        return representative_unit(result, layer, mode) if unit_choice == TYPICAL_UNIT else unit_choice


    def draw_figure1(result):
        draw_chart(accuracy_slot, accuracy_chart(result, paper_axis, total_steps=config.steps), width="stretch")
        draw_chart(percentile_slot, percentile_chart(result, layer, shown_unit(result), total_steps=config.steps, mode=mode))


    figure1 = run_experiment("paper_figure1", config, live=draw_figure1, label=f"Training both networks, {config.seeds} seed{'s' if config.seeds > 1 else ''}")
    draw_figure1(figure1)
    unit = shown_unit(figure1)
    no_bn, bn = figure1.by_label("no BN"), figure1.by_label("BN")
    target, bn_steps, no_bn_steps = steps_to_match(figure1)
    ahead = bn_ahead_fraction(figure1)
    eval_images = no_bn.train.eval_examples

    with metrics:
        m1, m2, m3, m4 = st.columns(4)
        m1.metric(f"Test accuracy, no BN (all {TEST_IMAGES:,} test images)", format_percent(no_bn.final_test_acc), help=f"Seed {config.seed}, on the full test set.")
        m2.metric(f"Test accuracy, BN (all {TEST_IMAGES:,} test images)", format_percent(bn.final_test_acc), delta=format_points(bn.final_test_acc - no_bn.final_test_acc), help=f"Seed {config.seed}, on the full test set.")
        if bn_steps is not None and no_bn_steps:
            m3.metric(f"Steps to {format_percent(target)} (no BN's final on curve (a), {eval_images:,} test images)", f"BN: {bn_steps:,}", delta=f"no BN: {no_bn_steps:,} ({no_bn_steps / max(bn_steps, 1):.1f}× more)", delta_color="off", help=f"On the {eval_images:,} test images of curve (a).")
        else:
            m3.metric(f"Steps to {format_percent(target)} (no BN's final on curve (a), {eval_images:,} test images)", "BN: never", delta=f"no BN: {no_bn_steps}", delta_color="off", help=f"On the {eval_images:,} test images of curve (a).")
        m4.metric("Evaluations where BN is ahead", format_percent(ahead), help="Share of the evaluations after step 0 at which BN's test accuracy is higher.")

    for run in figure1.seed_runs:
        if run.diverged:
            st.warning(
                f"The {run.label} network of seed {run.train.seed} **diverged** at step {run.diverged_step:,}: its loss became NaN or infinite, "
                "so training stopped there and its curves end. Choose a smaller learning rate."
            )

    steps_no_bn, unit_no_bn = figure1.percentiles("no BN", layer, unit, mode)
    _, unit_bn = figure1.percentiles("BN", layer, unit, mode)
    drift = drift_verdict(figure1, layer, mode)
    unit_drift_no_bn, unit_drift_bn = (median_drift(figure1, label, layer, mode=mode)[unit] for label in ("no BN", "BN"))
    accuracy = accuracy_verdict(figure1)
    steadier = {"supported": "steadier", "not supported": "**not** steadier"}.get(drift.verdict.word, drift.verdict.label)
    higher = {"supported": "higher", "not supported": "**not** higher"}.get(accuracy.word, accuracy.label)
    from_step = steps_no_bn[np.searchsorted(steps_no_bn, DRIFT_FROM_FRACTION * steps_no_bn[-1])]
    left, right = st.columns(2)
    with left:
        st.markdown("**The paper (Sec. 4.1, Fig. 1)**")
        st.markdown(
            "- (a): “the batch-normalized network enjoys the higher test accuracy”; on the paper's plot the BN curve is above the other over all "
            f"{PAPER_STEPS:,} steps.\n"
            "- (b, c): for “one typical activation from the last hidden layer”, the distributions without BN “change "
            "significantly over time, both in their mean and the variance”; with BN they are “much more stable”."
        )
    with right:
        st.markdown(f"**Measured here ({config.steps:,} steps, seeds {config.seed}–{config.seed + config.seeds - 1})**" if config.seeds > 1 else f"**Measured here ({config.steps:,} steps, seed {config.seed})**")
        ahead_word = "ahead at every evaluation" if ahead == 1.0 else f"ahead at {format_percent(ahead)} of the evaluations"
        match_text = (
            f"BN reached no BN's final accuracy ({format_percent(target)} on {eval_images:,} test images) at step {bn_steps:,}; "
            f"no BN needed {no_bn_steps:,}."
            if bn_steps is not None and no_bn_steps
            else f"BN never reached no BN's final accuracy ({format_percent(target)}) in {config.steps:,} steps."
        )
        st.markdown(
            f"- (a): over {accuracy.seeds} seed{'s' if accuracy.seeds > 1 else ''}, BN's final test accuracy (full test set) is **{higher}**: {accuracy.reason} "
            f"On seed {config.seed}, BN is {ahead_word}. {match_text}\n"
            f"- (b, c), unit {unit} of layer {layer} ({mode} mode), seed {config.seed}: from step {from_step:,} on, "
            f"its median moved over a range of **{unit_drift_no_bn:.2f}** without BN and **{unit_drift_bn:.2f}** with BN; the 15th–85th band was {unit_no_bn[1, 2] - unit_no_bn[1, 0]:.2f} wide "
            f"at the first evaluation after step 0 and {unit_no_bn[-1, 2] - unit_no_bn[-1, 0]:.2f} at the last without BN, "
            f"{unit_bn[1, 2] - unit_bn[1, 0]:.2f} and {unit_bn[-1, 2] - unit_bn[-1, 0]:.2f} with BN.\n"
            f"- Over all {PAPER_HIDDEN[layer - 1]} units of layer {layer}, from step {from_step:,} on, each unit's median moved by "
            f"{np.mean(drift.relative['no BN']):.2f} of its own 15th–85th band width on average without BN and {np.mean(drift.relative['BN']):.2f} with BN "
            f"(mean over seeds; in raw units {np.mean(drift.raw['no BN']):.2f} and {np.mean(drift.raw['BN']):.2f}, which the two networks' different scales make incomparable): "
            f"with BN the inputs are **{steadier}**. The rule: no BN's band-relative drift over BN's, per seed, is {drift.verdict.label}: {drift.verdict.reason}"
        )
    st.dataframe(drift_table(drift, figure1), hide_index=True)
    st.caption(
        f"The percentiles are of each unit's input to its sigmoid over the first {eval_images:,} test images. Training mode: BN normalises each batch of "
        f"{config.batch_size} of them by that batch's own mean and variance, as while training (its running averages untouched); evaluation mode: by its running "
        "averages. For the BN network that input is γ·x̂ + β, after normalisation; without BN the two modes are the same. The charts start at the "
        "first evaluation after step 0: before any training step BN's running averages hold their initial mean 0 and variance 1, "
        "so evaluation-mode BN passes its raw input through."
    )
    st.markdown("**Where this differs from the paper**\n" + "\n".join(f"- {line}" for line in deviations(config, mode)))
    downloads(
        "paper_figure1",
        config,
        {
            "Figure 1a test accuracy": curve_records(figure1.runs, "test_acc"),
            f"Figure 1bc percentiles layer {layer} unit {unit}": percentile_records(figure1, layer, unit),
        },
        title="Figure 1: download data and config",
    )


figure1_section()

# --- the ImageNet claims, in miniature ---------------------------------------------------------
@section("lr_claims")
def lr_claims_section():
    st.header("The ImageNet claims, in miniature")
    st.markdown(
        "On ImageNet (Sec. 4.2, Table 2) the paper trained Inception with BN at **5×** and **30×** its learning rate, "
        "and with **sigmoid** instead of ReLU. Here the same MNIST network tries the same multipliers, with and without BN, "
        "with ReLU and with sigmoid; the bars count the steps each run needs to reach a target accuracy."
    )
    st.dataframe(
        pd.DataFrame(
            {
                "model (paper, Table 2)": ["Inception", "BN-Baseline", "BN-x5", "BN-x30", "BN-x5-Sigmoid"],
                "steps to 72.2%": ["31.0M", "13.3M", "2.1M", "2.7M", "not reached"],
                "max accuracy": ["72.2%", "72.7%", "73.0%", "74.8%", "69.8%"],
            }
        ),
        hide_index=True,
    )
    st.caption("The paper's numbers, quoted: BN-x5 needed 14× fewer steps than Inception; without BN, Inception with sigmoid never exceeded 1/1000 accuracy.")

    lr_defaults = PaperLrClaimsConfig()
    lr_controls = Controls("paper")
    e1, e2, e3 = st.columns([1, 1, 1.6])
    with e1:
        base_lr = lr_controls.select("×1 learning rate", "base_lr", [0.01, 0.03, 0.1], lr_defaults.base_lr, slider=True)
    with e2:
        lr_steps = lr_controls.select("Steps per run", "lr_steps", [100, 200, 500, 1_000, 2_000], lr_defaults.steps, slider=True, format_func=lambda s: f"{s:,}")
    with e3:
        TARGETS = ["baseline", 0.8, 0.9, 0.95]
        target_choice = lr_controls.select(
            "Target accuracy", "target", TARGETS, "baseline",
            format_func=lambda t: "no BN ×1 ReLU's final accuracy" if t == "baseline" else f"{t:.0%}",
            help="The default is the paper's yardstick: the accuracy the plain network reaches at the normal learning rate.",
        )
    lr_controls.show_notes()
    lr_config = page_config(lr_defaults, base_lr=base_lr, steps=lr_steps, eval_every=max(10, lr_steps // 20))
    lr_slot = st.empty()


    def draw_lr(result):
        draw_chart(lr_slot, lr_curves_chart(result, total_steps=lr_config.steps))


    claims = run_experiment("paper_lr_claims", lr_config, live=draw_lr, label=f"Training {len(lr_config.runs())} networks")
    draw_lr(claims)
    rows = steps_to_target(claims, None if target_choice == "baseline" else float(target_choice))
    draw_chart(st, steps_to_target_chart(rows))

    findings = []
    yardstick = baseline_activation(claims)
    goal = format_percent(rows[0]["target"])
    for activation in claims.activations:
        gains = speedups_by_multiplier(rows, activation, yardstick)
        if not gains["baseline_steps"]:
            findings.append(f"**{activation}**: no speed-up can be measured: no BN ×1 ({yardstick}) missed {goal} within {lr_config.steps:,} steps.")
            continue
        each = "; ".join(
            f"BN ×{g['multiplier']:g} at step {g['steps']:,} (**{g['ratio']:.1f}× fewer steps**)" if g["ratio"] is not None
            else f"BN ×{g['multiplier']:g} {g['status']}"
            for g in gains["by_multiplier"]
        )
        findings.append(
            f"**{activation}**, each multiplier against no BN ×1 ({yardstick}, step {gains['baseline_steps']:,} to reach {goal}): {each} "
            f"(one run each, seed {lr_config.seed}: a measurement, not a verdict; paper, ImageNet: BN-x5 took 14× fewer steps than Inception, Table 2)."
        )
    diverged = [run for run in claims.runs if run.diverged]
    counts = divergence_counts(claims)
    count_text = ", ".join(f"{label}: {d} of {n} runs" for label, (d, n) in counts.items())
    if diverged:
        findings.append(
            "**Diverged** (loss became NaN or infinite, training stopped): "
            + ", ".join(f"{run.label} at step {run.diverged_step:,}" for run in diverged)
            + f" ({count_text}; one seed, {lr_config.seed}, per run)."
            + (" Here only networks without BN blew up: BN rescales every layer's input at every step, so a larger step cannot inflate the activations layer after layer." if all(run.model.label == "no BN" for run in diverged) else "")
        )
    else:
        findings.append(f"No run diverged at these learning rates ({count_text} diverged; one seed per run).")
    stuck = chance_level_runs(claims)
    if stuck:
        findings.append("**Near chance** at the end (could not train in time): " + ", ".join(stuck) + ".")
    if "sigmoid" in claims.activations:
        sigmoid_bn = max((r for r in claims.runs if r.model.activation == "sigmoid" and r.model.label == "BN"), key=lambda r: r.final_test_acc)
        sigmoid_plain = claims.find("no BN", 1, "sigmoid")
        findings.append(
            f"**Sigmoid**: the best BN run ({sigmoid_bn.label}) ended at {format_percent(sigmoid_bn.final_test_acc)}, "
            f"no BN ×1 at {format_percent(sigmoid_plain.final_test_acc)} (paper, Sec. 4.2.2 and Table 2: BN-x5-Sigmoid 69.8%, plain sigmoid Inception ≤ 0.1%)."
        )
    st.markdown("\n".join(f"- {line}" for line in findings))
    st.caption(
        f"Each run: {lr_config.steps:,} steps of plain SGD, batches of {lr_config.batch_size}, seed {lr_config.seed}; accuracy on {claims.runs[0].train.eval_examples:,} test images "
        f"every {lr_config.eval_every} steps. MNIST is far easier than ImageNet: the ratios here are this network's, not the paper's."
    )
    downloads(
        "paper_lr_claims",
        lr_config,
        {"Learning-rate runs test accuracy": lr_curve_records(claims), "Steps to target": pd.DataFrame(rows)},
        title="Learning-rate panel: download data and config",
    )


lr_claims_section()

source_expander(PaperFigure1Config.models, steps_to_match, median_drift, relative_median_drift, drift_verdict, judge, representative_unit, steps_to_target, speedups_by_multiplier)
device_caption()
