"""The original paper's results: Ioffe & Szegedy 2015, Figure 1 and the ImageNet claims in miniature."""
import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import Controls, device_caption, draw_chart, downloads, format_percent, preset_links, run_experiment, source_expander
from bnviz.charts import curve_records
from bnviz.charts.paper import accuracy_chart, lr_curve_records, lr_curves_chart, percentile_chart, percentile_records, steps_to_target_chart
from bnviz.experiments.paper_figure1 import ARTICLE_LR, PaperFigure1Config, bn_ahead_fraction, median_drift, steps_to_match
from bnviz.experiments.paper_lr_claims import PaperLrClaimsConfig, baseline_activation, chance_level_runs, speedup, steps_to_target
from bnviz.train import PAPER_BATCH_SIZE, PAPER_STEPS

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
with st.expander("Settings of the experiment: network, batch size and plain SGD as in the paper; fewer steps by default", expanded=False):
    c1, c2, c3, c4, c5 = st.columns(5)
    with c1:
        steps = controls.select("Training steps (batches of 60)", "steps", STEP_CHOICES, defaults.steps, slider=True, format_func=lambda s: f"{s:,}")
        st.button(
            f"Use the paper's {PAPER_STEPS:,} steps",
            on_click=lambda: st.session_state.update({"paper.steps": PAPER_STEPS}),
            help="About 3 minutes on one CPU core the first time; then cached for everyone.",
        )
    with c2:
        lr = controls.select(
            "Learning rate (SGD)", "lr", [0.003, ARTICLE_LR, 0.03, 0.1, 0.3, 1.0], defaults.lr, slider=True,
            help=f"The paper does not state it; the article's notebook uses {ARTICLE_LR}. The default here, "
            f"{defaults.lr}, brings the short default run near the paper's accuracy range.",
        )
    with c3:
        init = controls.radio(
            "Initial weights", "init", ["default", "normal"], defaults.init,
            format_func={"default": "PyTorch default", "normal": "N(0, 1), as the article's notebook"}.get,
            help="The paper says only 'small random Gaussian values'. The article's notebook, which reproduces Figure 1, "
            "uses N(0, 1): it saturates the plain network's sigmoids, which BN undoes. PyTorch's default is small and uniform.",
        )
    with c4:
        optimizer = controls.radio(
            "Optimiser", "opt", ["sgd", "momentum"], defaults.optimizer,
            format_func={"sgd": "plain SGD", "momentum": "SGD + momentum 0.9"}.get,
        )
    with c5:
        seed = controls.slider("Seed", "seed", 0, 9, defaults.seed)
config = defaults.replace(steps=steps, lr=lr, init=init, optimizer=optimizer, seed=seed)

d1, d2, d3 = st.columns([1, 1, 2])
with d1:
    layer = controls.select("Hidden layer shown in (b, c)", "layer", [1, 2, 3], 3, help="The paper shows the last hidden layer (3).")
with d2:
    unit = controls.slider("Unit of that layer", "unit", 0, 99, 0)
with d3:
    paper_axis = controls.toggle("The paper's accuracy axis (0.7 to 1.0)", "axis", False)
controls.show_notes()

st.subheader(f"Figure 1, reproduced: {config.steps:,} steps here, {PAPER_STEPS:,} in the paper")
metrics = st.container()
accuracy_slot = st.empty()
percentile_slot = st.empty()


def draw_figure1(result):
    draw_chart(accuracy_slot, accuracy_chart(result, paper_axis, total_steps=config.steps), width="stretch")
    draw_chart(percentile_slot, percentile_chart(result, layer, unit, total_steps=config.steps))


figure1 = run_experiment("paper_figure1", config, live=draw_figure1, label="Training both networks")
draw_figure1(figure1)
no_bn, bn = figure1.by_label("no BN"), figure1.by_label("BN")
target, bn_steps, no_bn_steps = steps_to_match(figure1)
ahead = bn_ahead_fraction(figure1)

with metrics:
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Test accuracy, no BN", format_percent(no_bn.final_test_acc, 2))
    m2.metric("Test accuracy, BN", format_percent(bn.final_test_acc, 2), delta=f"{100 * (bn.final_test_acc - no_bn.final_test_acc):+.2f} points")
    if bn_steps is not None and no_bn_steps:
        m3.metric(f"Steps to {format_percent(target)} (no BN's final)", f"BN: {bn_steps:,}", delta=f"no BN: {no_bn_steps:,} ({no_bn_steps / max(bn_steps, 1):.1f}× more)", delta_color="off")
    else:
        m3.metric(f"Steps to {format_percent(target)} (no BN's final)", "BN: never", delta=f"no BN: {no_bn_steps}", delta_color="off")
    m4.metric("Evaluations where BN is ahead", format_percent(ahead, 0), help="Share of the evaluations after step 0 at which BN's test accuracy is higher.")

for run in figure1.runs:
    if run.diverged:
        st.warning(
            f"The {run.label} network **diverged** at step {run.diverged_step:,}: its loss became NaN or infinite, "
            "so training stopped there and its curves end. Choose a smaller learning rate."
        )

drift_no_bn, drift_bn = (median_drift(figure1, label, layer) for label in ("no BN", "BN"))
steps_no_bn, unit_no_bn = figure1.percentiles("no BN", layer, unit)
_, unit_bn = figure1.percentiles("BN", layer, unit)
steadier = "steadier" if drift_bn.mean() < drift_no_bn.mean() else "**not** steadier"
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
    st.markdown(f"**Measured here ({config.steps:,} steps, seed {config.seed})**")
    ahead_word = "ahead at every evaluation" if ahead == 1.0 else f"ahead at {format_percent(ahead, 0)} of the evaluations"
    match_text = (
        f"BN reached no BN's final accuracy ({format_percent(target)} on 2,000 test images) at step {bn_steps:,}; "
        f"no BN needed {no_bn_steps:,}."
        if bn_steps is not None and no_bn_steps
        else f"BN never reached no BN's final accuracy ({format_percent(target)}) in {config.steps:,} steps."
    )
    st.markdown(
        f"- (a): BN is **{ahead_word}**; final test accuracy (10,000 images) BN {format_percent(bn.final_test_acc, 2)}, "
        f"no BN {format_percent(no_bn.final_test_acc, 2)}. {match_text}\n"
        f"- (b, c), unit {unit} of layer {layer}: from 10% of the run (step {steps_no_bn[np.searchsorted(steps_no_bn, 0.1 * steps_no_bn[-1])]:,}) on, "
        f"its median moved over a range of **{drift_no_bn[unit]:.2f}** without BN and **{drift_bn[unit]:.2f}** with BN; the 15th–85th band was {unit_no_bn[1, 2] - unit_no_bn[1, 0]:.2f} wide "
        f"at the first evaluation after step 0 and {unit_no_bn[-1, 2] - unit_no_bn[-1, 0]:.2f} at the last without BN, "
        f"{unit_bn[1, 2] - unit_bn[1, 0]:.2f} and {unit_bn[-1, 2] - unit_bn[-1, 0]:.2f} with BN.\n"
        f"- Over all {len(drift_bn)} units of layer {layer}, from 10% of the run on, the median moved by "
        f"{drift_no_bn.mean():.2f} on average without BN and {drift_bn.mean():.2f} with BN: with BN the inputs are **{steadier}**."
    )
st.caption(
    "The percentiles are of each unit's input to its sigmoid, in evaluation mode (BN uses its running averages), "
    "over the first 2,000 test images. For the BN network that input is γ·x̂ + β, after normalisation. The charts start at the "
    "first evaluation after step 0: before any training step BN's running averages hold their initial mean 0 and variance 1, "
    "so evaluation-mode BN passes its raw input through."
)

# --- the ImageNet claims, in miniature ---------------------------------------------------------
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
lr_config = lr_defaults.replace(base_lr=base_lr, steps=lr_steps, eval_every=max(10, lr_steps // 20))
lr_slot = st.empty()


def draw_lr(result):
    draw_chart(lr_slot, lr_curves_chart(result, total_steps=lr_config.steps))


claims = run_experiment("paper_lr_claims", lr_config, live=draw_lr, label="Training 12 networks")
draw_lr(claims)
rows = steps_to_target(claims, None if target_choice == "baseline" else float(target_choice))
draw_chart(st, steps_to_target_chart(rows))

findings = []
yardstick = baseline_activation(claims)
goal = format_percent(rows[0]["target"])
for activation in claims.activations:
    gain = speedup(rows, activation, yardstick)
    if gain is not None:
        findings.append(
            f"**{activation}**: no BN ×1 ({yardstick}) reached {goal} at step {gain['baseline_steps']:,}; "
            f"the fastest BN run ({gain['fastest']}) at step {gain['fastest_steps']:,}: **{gain['ratio']:.1f}× fewer steps** (paper, ImageNet: 14×)."
        )
    else:
        findings.append(f"**{activation}**: no speed-up can be measured: no BN ×1 ({yardstick}) or every {activation} BN run missed {goal} within {lr_config.steps:,} steps.")
diverged = [run for run in claims.runs if run.diverged]
if diverged:
    findings.append(
        "**Diverged** (loss became NaN or infinite, training stopped): "
        + ", ".join(f"{run.label} at step {run.diverged_step:,}" for run in diverged)
        + "."
        + (" Only networks without BN blew up: BN rescales every layer's input at every step, so a larger step cannot inflate the activations layer after layer." if all(run.model.label == "no BN" for run in diverged) else "")
    )
else:
    findings.append("No run diverged at these learning rates.")
stuck = chance_level_runs(claims)
if stuck:
    findings.append("**Near chance** at the end (could not train in time): " + ", ".join(stuck) + ".")
if "sigmoid" in claims.activations:
    sigmoid_bn = max((r for r in claims.runs if r.model.activation == "sigmoid" and r.model.label == "BN"), key=lambda r: r.final_test_acc)
    sigmoid_plain = claims.find("no BN", 1, "sigmoid")
    findings.append(
        f"**Sigmoid**: the best BN run ({sigmoid_bn.label}) ended at {format_percent(sigmoid_bn.final_test_acc)}, "
        f"no BN ×1 at {format_percent(sigmoid_plain.final_test_acc)} (paper: BN-x5-Sigmoid 69.8%, plain sigmoid Inception ≤ 0.1%)."
    )
st.markdown("\n".join(f"- {line}" for line in findings))
st.caption(
    f"Each run: {lr_config.steps:,} steps of plain SGD, batches of {lr_config.batch_size}, seed {lr_config.seed}; accuracy on 2,000 test images "
    f"every {lr_config.eval_every} steps. MNIST is far easier than ImageNet: the ratios here are this network's, not the paper's."
)

downloads(
    "paper_figure1",
    config,
    {
        "Figure 1a test accuracy": curve_records(figure1.runs, "test_acc"),
        f"Figure 1bc percentiles layer {layer} unit {unit}": percentile_records(figure1, layer, unit),
    },
    title="Figure 1: download data and config",
)
downloads(
    "paper_lr_claims",
    lr_config,
    {"Learning-rate runs test accuracy": lr_curve_records(claims), "Steps to target": pd.DataFrame(rows)},
    title="Learning-rate panel: download data and config",
)
source_expander(PaperFigure1Config.models, steps_to_match, median_drift, steps_to_target, speedup)
device_caption()
