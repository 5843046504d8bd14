"""Why does BN work? Three hypotheses (the article's C.3), each put to a live experiment."""
import math

import pandas as pd
import streamlit as st

from bnviz.app import Controls, curve_panels, device_caption, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, shared_with_page, source_expander
from bnviz.charts import curve_records
from bnviz.charts.why import (
    beta_chart,
    drift_chart,
    drift_records,
    ics_chart,
    ics_records,
    landscape_band_chart,
    landscape_records,
    lower_change_chart,
    lower_change_records,
    unit_distribution_chart,
)
from bnviz.experiments.why_noisy_bn import NoisyBNConfig, drift
from bnviz.experiments.why_probes import STEP_MULTIPLIERS, ProbesConfig, measures, number, scoreboard
from bnviz.models import CovariateNoise
from bnviz.probes import InternalCovariateShift, LossLandscape, LowerLayerChange

st.title("Why does BN work?")
preset_links("why_bn_works")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "BN clearly helps; *why* is still argued about. Three explanations are on the table: "
    "**(1)** the original paper's: BN reduces *internal covariate shift* (ICS), the drift of each layer's input "
    "distribution while the layers below it learn; **(2)** the more careful one: BN cuts the *interdependency* "
    "between layers, since γ and β alone set each unit's mean and scale, whatever the layers below do; "
    "**(3)** Santurkar et al. (2018, [arXiv 1805.11604](https://arxiv.org/abs/1805.11604)): BN makes the "
    "*optimisation landscape smoother*. Santurkar et al. tested (1) and (3) with experiments small enough to "
    "re-run here, in miniature, on MNIST. Judge for yourself."
)
board = st.container()
controls = Controls("why")
ACTIVATIONS = ["sigmoid", "tanh", "relu"]
LEARNING_RATES = [0.01, 0.03, 0.1, 0.3, 0.5, 1.0, 2.0]


def warn_diverged(runs, experiment: str) -> None:
    for run in runs:
        if run.diverged:
            st.warning(
                f"{experiment}: the {run.label} model **diverged** at step {run.diverged_step}: its loss became NaN or infinite. "
                "The learning rate is too large for it; its curves stop there and its numbers read n/a."
            )


def accuracy_text(run) -> str:
    return f"diverged (step {run.diverged_step})" if run.diverged else format_percent(run.final_test_acc)


def ratio_text(a: float, b: float) -> str:
    return f"{a / b:,.1f}×" if b > 0 and math.isfinite(a) and math.isfinite(b) else "n/a"


noisy = probes = None  # set by their sections; hidden or still computing: no scoreboard

# ------------------------------------------------------------------ (1) noisy BN
@section("noisy_bn")
def noisy_bn_section():
    global noisy, noisy_config  # the scoreboard's
    st.header("(1) Does BN work by keeping layer inputs stable? Noisy BN")
    st.markdown(
        "Santurkar et al.'s test (their Sec. 2.1, Algorithm 1): after every BN layer, *add* covariate shift on purpose. "
        "At every training step each unit j gets a fresh random mean μⱼ ~ U(−0.5, 0.5) and scale σⱼ ~ U(1, 1.25), "
        "and each example i its own jitter around them:"
    )
    st.latex(r"y_{ij} \leftarrow s_{ij}\,\mathrm{BN}(x)_{ij} + m_{ij},\qquad m_{ij}\sim U(\mu_j-0.1,\ \mu_j+0.1),\quad s_{ij}\sim\mathcal N(\sigma_j,\ 0.1^2)")
    st.markdown(
        "The noise acts in training mode only (`model.train()`); test accuracy is measured in `model.eval()`, "
        "where BN uses its running statistics and no noise is added. If stable inputs were what makes BN work, "
        "noisy BN should lose BN's advantage. The same noise on the network *without* BN is shown for contrast."
    )
    noisy_defaults = NoisyBNConfig()
    with st.expander("Settings of the noisy-BN experiment", expanded=False):
        c1, c2, c3, c4, c5 = st.columns(5)
        with c1:
            n_activation = controls.select("Activation", "n_act", ACTIVATIONS, noisy_defaults.activation)
        with c2:
            n_lr = controls.select("Learning rate (SGD)", "n_lr", LEARNING_RATES, noisy_defaults.lr, slider=True)
        with c3:
            n_steps = controls.slider("Training steps (batches of 60)", "n_steps", 100, 3000, noisy_defaults.steps, step=100)
        with c4:
            noise = controls.select("Noise strength (× the paper's)", "noise", [0.0, 0.5, 1.0, 2.0, 4.0], noisy_defaults.noise_strength, slider=True, help="Multiplies every range of Algorithm 1; 0 turns the noise off.")
        with c5:
            n_seed = controls.slider("Seed", "n_seed", 0, 9, noisy_defaults.seed, help="The charts show this seed; the scoreboard uses it and the next ones.")
            n_seeds = controls.slider("Seeds", "n_seeds", 1, 5, noisy_defaults.seeds, help="The scoreboard's verdicts need 2 or more (one seed has no interval).")
    noisy_config = page_config(noisy_defaults, activation=n_activation, lr=n_lr, steps=n_steps, noise_strength=noise, seed=n_seed, seeds=n_seeds)
    shared_with_page("why.noisy", noisy_config)  # the scoreboard reads it
    st.caption(f"The paper's MLP: 784 → {' → '.join(map(str, noisy_config.hidden))} → 10, {n_activation}, SGD lr {n_lr}, batches of {noisy_config.batch_size}; the four models see the same batches.")

    noisy_metrics = st.container()
    draw_noisy = curve_panels([(st, "test_acc", f"Test accuracy ({noisy_config.train_config().eval_examples:,} test images), seed {noisy_config.seed}")], total_steps=noisy_config.steps)

    noisy = run_experiment("why_noisy_bn", noisy_config, live=draw_noisy, label="Training no BN, BN, noisy BN, no BN + noise")
    draw_noisy(noisy.runs)
    warn_diverged(noisy.runs, "Noisy-BN experiment")
    by_label = {run.label: run for run in noisy.runs}
    with noisy_metrics:
        columns = st.columns(len(noisy.runs))
        for column, run in zip(columns, noisy.runs):
            column.metric(f"Test accuracy, {run.label}", accuracy_text(run))

    draw_chart(st, drift_chart(noisy.runs, "change of a unit's mean", "How far a unit's input mean moves per step"), width="stretch")
    draw_chart(st, drift_chart(noisy.runs, "change of a unit's variance", "How far a unit's input variance moves per step"), width="stretch")
    draw_chart(st, unit_distribution_chart(noisy.runs), width="stretch")
    bn_drift, noisy_drift, plain_drift = (drift(by_label[label])[0] for label in ("BN", "noisy BN", "no BN"))
    st.markdown(
        f"Per step, a unit's input mean moves by **{number(noisy_drift, '.3g')}** on average with noisy BN, "
        f"**{ratio_text(noisy_drift, bn_drift)}** as much as with BN ({number(bn_drift, '.2g')}) and "
        f"{ratio_text(noisy_drift, plain_drift)} as much as without BN ({number(plain_drift, '.2g')}) (medians over steps, all layers averaged). "
        f"After {noisy_config.steps} steps, on the 10,000 test images: noisy BN **{accuracy_text(by_label['noisy BN'])}**, "
        f"BN **{accuracy_text(by_label['BN'])}**, no BN {accuracy_text(by_label['no BN'])}, "
        f"no BN + noise {accuracy_text(by_label['no BN + noise'])}."
    )
    st.caption(
        "Under BN (placed before the nonlinearity) a unit's input on a batch has mean β and standard deviation ≈ γ exactly, "
        "by construction: its drift is the drift of γ and β. A single step's change also contains batch-to-batch sampling noise; "
        "the curves are running means over 10 steps."
    )
    downloads("why_noisy_bn", noisy_config, {"Test accuracy": curve_records(noisy.runs, "test_acc"), "Distribution drift": drift_records(noisy.runs)})


noisy_bn_section()

# ------------------------------------------------------------------ probes
@section("probes")
def probes_section():
    global probes, probe_config  # the scoreboard's
    st.header("Probing training between steps: ICS, interdependency, landscape")
    st.markdown(
        "Every *k* steps, the batch that step trained on is re-run with extra forward and backward passes. "
        "The probes evaluate the model at substitute weights (`torch.func.functional_call`) in training mode, as the step saw it "
        "(BN normalises with the batch's statistics); BN's running buffers are restored afterwards and noisy BN's noise is frozen "
        "to the step's draw, so training is exactly what it would be without them."
    )
    probe_defaults = ProbesConfig()
    with st.expander("Settings of the probe experiment", expanded=False):
        c1, c2, c3, c4, c5, c6, c7 = st.columns(7)
        with c1:
            p_activation = controls.select("Activation", "p_act", ACTIVATIONS, probe_defaults.activation)
        with c2:
            p_lr = controls.select("Learning rate (SGD)", "p_lr", LEARNING_RATES, probe_defaults.lr, slider=True)
        with c3:
            p_steps = controls.slider("Training steps", "p_steps", 100, 2000, probe_defaults.steps, step=100)
        with c4:
            every = controls.select("Probe every k steps", "every", [5, 10, 20, 50, 100], probe_defaults.probe_every, help="Each probe re-runs the step's batch with extra forward and backward passes: fewer probes train faster.")
        with c5:
            max_multiplier = controls.select("Largest step η (× lr)", "eta", list(STEP_MULTIPLIERS[1:]), probe_defaults.max_multiplier, help="The landscape probe steps η = 0.5, 1, 2, 4, … × lr up to this.")
        with c6:
            with_noisy = controls.toggle("Also probe noisy BN", "noisy", probe_defaults.with_noisy)
        with c7:
            p_seed = controls.slider("Seed", "p_seed", 0, 9, probe_defaults.seed, help="The charts show this seed; the scoreboard uses it and the next ones.")
            p_seeds = controls.slider("Seeds", "p_seeds", 1, 5, probe_defaults.seeds, help="The scoreboard's verdicts need 2 or more (one seed has no interval).")
    controls.show_notes()
    probe_config = page_config(probe_defaults, activation=p_activation, lr=p_lr, steps=p_steps, probe_every=every, max_multiplier=max_multiplier, with_noisy=with_noisy, seed=p_seed, seeds=p_seeds)
    shared_with_page("why.probes", probe_config)  # the scoreboard reads it
    st.caption(f"784 → {' → '.join(map(str, probe_config.hidden))} → 10, {p_activation}, SGD lr {p_lr}, batches of {probe_config.batch_size}; probes every {every} steps.")
    draw_probes = curve_panels([(st, "test_acc", "Test accuracy of the probed runs")], total_steps=probe_config.steps)

    probes = run_experiment("why_probes", probe_config, live=draw_probes, label="Training and probing")
    draw_probes(probes.runs)
    warn_diverged(probes.runs, "Probe experiment")
    probe_measures = {run.label: measures(run) for run in probes.runs}
    plain, bn = probe_measures["no BN"], probe_measures["BN"]

    st.subheader("(1′) Internal covariate shift, the optimisation view")
    st.markdown(
        "Santurkar et al.'s Definition 2.1 asks how much layer *i*'s gradient changes because the layers below it moved. "
        "On the same batch, compare the gradient before the step with the one layer *i* would get had the layers below "
        "already taken their update:"
    )
    st.latex(
        r"G = \nabla_{W_i}\mathcal L(W_1^{t},\dots,W_{i-1}^{t},W_i^{t},\dots,W_k^{t}),\quad "
        r"G' = \nabla_{W_i}\mathcal L(W_1^{t+1},\dots,W_{i-1}^{t+1},W_i^{t},\dots,W_k^{t}),\quad "
        r"\mathrm{ICS}_i = \lVert G - G'\rVert_2"
    )
    draw_chart(st, ics_chart(probes.runs, "l2"), width="stretch")
    draw_chart(st, ics_chart(probes.runs, "cosine"), width="stretch")
    m1, m2, m3 = st.columns(3)
    m1.metric("‖G − G′‖ / ‖G‖, BN", f"{number(bn['ics_relative'], '.3f')}", delta=f"no BN: {number(plain['ics_relative'], '.3f')}", delta_color="off")
    m2.metric("cos(G, G′), BN", f"{number(bn['ics_cosine'], '.3f')}", delta=f"no BN: {number(plain['ics_cosine'], '.3f')}", delta_color="off")
    m3.metric("‖G − G′‖, BN", f"{number(bn['ics_l2'], '.3g')}", delta=f"no BN: {number(plain['ics_l2'], '.3g')}", delta_color="off")
    st.markdown(
        f"Medians over probe steps and layers: when the layers below take their step, a layer's gradient changes by "
        f"{format_percent(bn['ics_relative'])} of its size with BN and by {format_percent(plain['ics_relative'])} without. Santurkar et al. found BN's ICS by this measure *similar or "
        "larger* (their Fig. 5, VGG and deep linear networks); the numbers above are ours, from these runs."
    )

    st.subheader("(2) Interdependency: does a change below reach the layers above?")
    st.markdown(
        "After the last probe step, the first linear layer's weights and bias are scaled by c, or its bias shifted, and the last hidden "
        "layer's output h is compared with the original on the same batch. BN right after that layer computes "
        "BN((cW)x + cb) = BN(Wx + b) and BN(Wx + b + d) = BN(Wx + b): only γ and β set the unit's mean and scale."
    )
    draw_chart(st, lower_change_chart(probes.runs), width="stretch")
    st.markdown(
        f"Largest relative change of the last hidden layer's output: **{number(bn['lower_change'], '.1e')}** with BN (rounding and ε), "
        f"**{number(plain['lower_change'], '.1e')}** without. This invariance holds by construction while BN uses batch statistics; "
        "in eval mode the running statistics would need to re-adapt first."
    )

    st.subheader("(3) The loss landscape along the gradient")
    st.markdown(
        "At each probe step, move the weights along the step's gradient g by η = "
        f"{', '.join(f'{m:g}' for m in probe_config.multipliers)} × lr and measure the loss, how much the gradient changes, "
        "and the *effective β-smoothness*, the largest gradient change per unit of distance moved (Santurkar et al. Sec. 3.1, Fig. 4):"
    )
    st.latex(r"\mathcal L(w-\eta g),\qquad \lVert\nabla\mathcal L(w-\eta g)-\nabla\mathcal L(w)\rVert_2,\qquad \beta=\max_\eta \frac{\lVert\nabla\mathcal L(w-\eta g)-\nabla\mathcal L(w)\rVert_2}{\lVert\eta g\rVert_2}")
    left, right = st.columns(2)
    draw_chart(left, landscape_band_chart(probes.runs, "loss"), width="stretch")
    draw_chart(right, landscape_band_chart(probes.runs, "change"), width="stretch")
    draw_chart(st, beta_chart(probes.runs), width="stretch")
    m1, m2, m3 = st.columns(3)
    m1.metric("Loss range along the gradient, BN", f"{number(bn['loss_range'], '.3f')}", delta=f"no BN: {number(plain['loss_range'], '.3f')}", delta_color="off")
    m2.metric("Largest gradient change, BN", f"{number(bn['grad_change'], '.3g')}", delta=f"no BN: {number(plain['grad_change'], '.3g')}", delta_color="off")
    m3.metric("Effective β, BN", f"{number(bn['beta'], '.3g')}", delta=f"no BN: {number(plain['beta'], '.3g')}", delta_color="off")
    st.markdown(
        f"Medians over probe steps: along the gradient the loss spans {number(bn['loss_range'], '.3f')} with BN and {number(plain['loss_range'], '.3f')} without "
        f"({ratio_text(plain['loss_range'], bn['loss_range'])} as much without BN); the gradient changes by up to {number(bn['grad_change'], '.3g')} "
        f"with BN and {number(plain['grad_change'], '.3g')} without. Santurkar et al. found BN's landscape clearly smoother (VGG on CIFAR-10)."
    )
    if "noisy BN" in probe_measures:
        nb = probe_measures["noisy BN"]
        st.markdown(
            f"Noisy BN, probed the same way: ICS {number(nb['ics_relative'], '.3f')} (relative), loss range {number(nb['loss_range'], '.3f')}, "
            f"gradient change {number(nb['grad_change'], '.3g')}, β {number(nb['beta'], '.3g')}."
        )
    downloads(
        "why_probes",
        probe_config,
        {
            "ICS per layer": ics_records(probes.runs),
            "Loss landscape": landscape_records(probes.runs),
            "First-layer changes": lower_change_records(probes.runs),
            "Test accuracy of the probed runs": curve_records(probes.runs, "test_acc"),
        },
    )
    source_expander(CovariateNoise, InternalCovariateShift, LossLandscape, LowerLayerChange, scoreboard)


probes_section()

if noisy is not None and probes is not None:
    with board:
        st.subheader("Scoreboard: what each hypothesis predicts, what these runs measured")
        rows = scoreboard(noisy, probes)
        st.table(pd.DataFrame(rows).set_index("hypothesis"))
        st.caption(
            f"Row (1) comes from the noisy-BN runs ({noisy_config.activation}, lr {noisy_config.lr}, {noisy_config.steps} steps, {noisy_config.seeds} seeds), "
            f"the others from the probed runs ({probe_config.activation}, lr {probe_config.lr}, {probe_config.steps} steps, {probe_config.seeds} seeds). "
            "Each verdict is a paired comparison over the seeds: supported only when the whole 95% interval clears the stated margin, "
            "not supported when it falls short, inconclusive otherwise. Row (2) is what BN guarantees by construction, not evidence. "
            "Change a setting below and they are recomputed."
        )
device_caption()
