"""Small batches and later fixes: Batch Renorm and ghost BN across batch sizes; the Bessel-factor mismatch."""
import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import Controls, budget_help, chart_mark, device_caption, diverged_sweep_warning, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, source_expander
from bnviz.charts.small_batches import accuracy_chart, bessel_chart, bessel_frame, closed_form_frame, closed_form_heatmap, mismatch_chart, schedule_chart, seed_frame, summary_frame
from bnviz.experiments.bessel_mismatch import MAX_DEPTH, TRAIN_BATCH_SIZE, BesselConfig, closed_form_ratio
from bnviz.experiments.small_batches import CHECK_EXAMPLES, DEFAULT_BATCH_SIZES, FULL_BATCH_SIZES, LIGHT_BATCH_SIZES, RENORM_MARGIN_POINTS, SmallBatchesConfig, renorm_verdict
from bnviz.models import model_label
from bnviz.probes import BesselProbe, TrainEvalMismatch
from bnviz.renorm import PAPER_D_MAX_REACHED, PAPER_R_MAX_REACHED, PAPER_TRAINING_STEPS, PAPER_WARMUP_STEPS, GhostBatchNorm1d, BatchRenorm1d, renorm_limits
from bnviz.data import TEST_IMAGES
from bnviz.formatting import format_points

AGREEMENT = 0.01  # measured within 1% of the closed form
SAME_OUTPUT_TOLERANCE = 1e-5  # mean |logit change| below this: the same outputs (float32 sums in another order)


points = format_points  # a difference of two shares, in the app's one format (bnviz.formatting)


st.title("Small batches and later fixes")
preset_links("small_batches")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "BN's statistics come from the batch. With few examples per batch they are noisy, and training (batch statistics) and "
    "inference (running averages) compute different functions. Two fixes from 2017 keep BN's per-feature statistics: "
    "**Batch Renorm** corrects the batch statistics towards the running ones, **ghost BN** computes statistics over small "
    "virtual batches inside a large one. GroupNorm and LayerNorm avoid the batch altogether. Then a smaller, exact effect: "
    "PyTorch's **Bessel-factor mismatch**, compounded through a deep chain."
)
controls = Controls("small")
notes_slot = st.container()  # a link's out-of-range values are reported here, once every control has read the URL

# --------------------------------------------------------------- 1. small batches
@section("batch_sweep")
def small_batch_sweep():
    st.header("1. Small batches: Batch Renorm, ghost BN, GroupNorm, LayerNorm")
    defaults = SmallBatchesConfig()
    with st.expander("Settings of the sweep", expanded=False):
        s1, s2, s3 = st.columns(3)
        with s1:
            sizes = controls.radio("Batch sizes", "sizes", ["light", "default", "full"], "default",
                                   format_func={"light": ", ".join(map(str, LIGHT_BATCH_SIZES)), "default": ", ".join(map(str, DEFAULT_BATCH_SIZES)), "full": ", ".join(map(str, FULL_BATCH_SIZES))}.get)
            seeds = controls.slider("Seeds", "seeds", 1, 5, defaults.seeds)
        with s2:
            steps = controls.select("Training steps per run", "steps", [10, 20, 50, 100, 200, 300, 500, 1000], defaults.steps, slider=True,
                                    help=budget_help("6 norms × batch sizes × seeds × steps, larger batches weigh more"))
            ghost = controls.select("Ghost BN: virtual batch size v", "v", [2, 4, 8, 16, 32, 64], defaults.ghost_batch_size, slider=True)
        with s3:
            r_max = controls.select("Batch Renorm: final r_max", "r_max", [1.0, 1.5, 2.0, 3.0, 5.0], defaults.r_max, slider=True,
                                    help="r = σ_B/σ is clipped to [1/r_max, r_max]; 1 with d_max 0 is plain BN.")
            d_max = controls.select("Batch Renorm: final d_max", "d_max", [0.0, 0.5, 1.0, 2.5, 5.0], defaults.d_max, slider=True,
                                    help="d = (μ_B − μ)/σ is clipped to [−d_max, d_max].")
    batch_sizes = {"light": LIGHT_BATCH_SIZES, "default": DEFAULT_BATCH_SIZES, "full": FULL_BATCH_SIZES}[sizes]
    config = page_config(defaults, batch_sizes=batch_sizes, seeds=seeds, steps=steps, ghost_batch_size=ghost, r_max=r_max, d_max=d_max)
    warmup = config.warmup_steps
    d_reached, r_reached = round(warmup * PAPER_D_MAX_REACHED / PAPER_WARMUP_STEPS), round(warmup * PAPER_R_MAX_REACHED / PAPER_WARMUP_STEPS)

    st.markdown("**Batch Renorm** (Ioffe 2017, Algorithm 1): per feature, with the running mean μ and σ = √(running var + ε) before this batch's update,")
    st.latex(r"r = \mathrm{sg}\!\left(\mathrm{clip}_{[1/r_{\max},\, r_{\max}]}\frac{\sigma_B}{\sigma}\right),\quad d = \mathrm{sg}\!\left(\mathrm{clip}_{[-d_{\max},\, d_{\max}]}\frac{\mu_B - \mu}{\sigma}\right),\quad \hat x_i = \frac{x_i - \mu_B}{\sigma_B}\, r + d,\quad y_i = \gamma \hat x_i + \beta")
    st.markdown(
        "sg is stop-gradient. Unclipped, $\\hat x_i = (x_i - \\mu)/\\sigma$ exactly: training computes what inference computes, while the "
        "gradient still flows through the batch statistics. bnviz updates the running averages exactly as torch's BN does (momentum 0.1, "
        "unbiased variance); the paper's algorithm averages σ_B itself. "
        "**Ghost BN** (Hoffer et al. 2017): the batch of B is split into virtual batches of v, each normalised with its own statistics; "
        "the running averages take one update per virtual batch (as their Algorithm 1; exactly torch's BN applied to each chunk in turn), "
        f"so they estimate the statistics of batches of v. With B ≤ v ghost BN *is* BN. Here v = **{ghost}**."
    )
    c_schedule, c_text = st.columns([3, 2])
    with c_schedule:
        draw_chart(st, schedule_chart(config), width="stretch")
    with c_text:
        st.markdown(
            f"**Warm-up, the paper's schedule scaled.** Ioffe's runs were {PAPER_TRAINING_STEPS:,} steps long (Sec. 4): plain BN (r_max = 1, d_max = 0) for the first "
            f"{PAPER_WARMUP_STEPS:,}, then the limits were \"gradually relaxed\" to reach d_max = 5 at {PAPER_D_MAX_REACHED:,} steps and r_max = 3 at {PAPER_R_MAX_REACHED:,}. "
            f"Scaled by {config.steps}/{PAPER_TRAINING_STEPS:,} (our runs are {config.steps} steps): plain BN for the first **{warmup}** step{'s' if warmup > 1 else ''}, "
            f"then linear (our reading of \"gradually\") to d_max = {d_max:g} at step {d_reached} and r_max = {r_max:g} at step {r_reached}."
        )
    st.caption(
        f"{len(config.batch_sizes) * len(config.norms) * config.seeds} models: the same 784-{config.width}-{config.width}-10 ReLU MLP with each norm, "
        f"trained {config.steps} Adam steps (lr {config.lr:g}) at every batch size, so a larger batch sees more examples (no BN shows what batch size alone does); "
        f"GroupNorm with {config.groups} groups. Accuracy on the full {TEST_IMAGES:,}-digit test set in eval mode (the chart and the metrics below; the train-vs-eval table further down uses the first {CHECK_EXAMPLES})."
    )
    result = run_experiment("small_batches", config, label="Batch-size sweep")
    small, large = min(config.batch_sizes), max(config.batch_sizes)
    draw_chart(st, accuracy_chart(result), width="stretch")
    diverged_sweep_warning(result.runs)

    metric_columns = st.columns(len(config.norms))
    for column, norm in zip(metric_columns, config.norms):
        at_small, at_large = result.mean_accuracy(norm, small), result.mean_accuracy(norm, large)
        column.metric(f"{model_label(norm)}, batch {small}", format_percent(at_small), delta=f"{format_points(at_small - at_large)} vs batch {large}" if np.isfinite(at_small - at_large) else None,
                      help=f"Test accuracy at batch {small} on all {TEST_IMAGES:,} test digits (eval mode), mean over seeds; the change is in percentage points from batch {large}.")

    by_norm_small = {n: result.mean_accuracy(n, small) for n in config.norms}
    ranked = sorted((n for n in config.norms if np.isfinite(by_norm_small[n])), key=by_norm_small.get, reverse=True)
    sentences = []
    if ranked:
        sentences.append(
            f"At batch {small}, from best to worst: " + ", ".join(f"**{model_label(n)}** {format_percent(by_norm_small[n])}" for n in ranked)
            + f" (mean of {config.seeds} seed{'s' if config.seeds > 1 else ''})."
        )
    if {"batch", "batch_renorm"} <= set(config.norms):
        bn_seeds, renorm_seeds = result.accuracy("batch")[0], result.accuracy("batch_renorm")[0]
        paired = np.isfinite(bn_seeds) & np.isfinite(renorm_seeds)
        if paired.any():
            better = int(np.sum(renorm_seeds[paired] > bn_seeds[paired]))
            gain = float(np.mean(renorm_seeds[paired] - bn_seeds[paired]))
            sentences.append(
                f"Batch Renorm vs BN at batch {small}: **{points(gain)}**, better in {better} of {int(paired.sum())} seed{'s' if paired.sum() > 1 else ''} "
                f"(the same seed gives both the same initial weights and batches). Whether Batch Renorm beats BN here by more than "
                f"{RENORM_MARGIN_POINTS:g} point: " + renorm_verdict(result).rule
            )
    if {"batch", "ghost_batch"} <= set(config.norms):
        ghost_larger = [b for b in config.batch_sizes if b > ghost]
        if ghost_larger:
            b = max(ghost_larger)
            sentences.append(
                f"Ghost BN at batch {b} ({b // ghost} virtual batches of {ghost}): {format_percent(result.mean_accuracy('ghost_batch', b))} vs BN's "
                f"{format_percent(result.mean_accuracy('batch', b))}; at batch sizes up to {ghost} it is BN."
            )
        else:
            sentences.append(f"Every batch here is at most v = {ghost}: ghost BN is BN at each of them (one virtual batch).")
    st.markdown(" ".join(sentences))

    st.subheader("Train mode vs eval mode")
    st.markdown(
        f"After training, the first {CHECK_EXAMPLES} test digits go through each model twice: in **train mode**, in batches of the training batch size "
        "(batch statistics; running averages frozen during this probe), and in **eval mode** (running averages). A prediction that changes "
        "between the two is the train/eval mismatch the fixes aim at."
    )
    summary = summary_frame(result)
    draw_chart(st, mismatch_chart(result), width="stretch")
    flat = [label for label, rows in summary.groupby("model", sort=False) if np.all(rows["prediction changes"].fillna(1) == 0)]
    if len(flat) > 1:
        st.caption("On the 0% line, drawn over each other: " + ", ".join(flat) + ".")
    at_small = summary[summary["batch size"] == small].set_index("model")
    shown = pd.DataFrame({
        f"eval-mode accuracy (first {CHECK_EXAMPLES} test digits)": [format_percent(v) for v in at_small["eval accuracy"]],
        f"train-mode accuracy (same digits, batches of {small})": [format_percent(v) for v in at_small["train-mode accuracy"]],
        "predictions that change": [format_percent(v) for v in at_small["prediction changes"]],
        "mean |logit change|": [f"{v:.4f}" if np.isfinite(v) else "n/a" for v in at_small["mean |logit change|"]],
    }, index=at_small.index)
    st.table(shown)
    exact = [m for m, v in at_small["mean |logit change|"].items() if np.isfinite(v) and v < SAME_OUTPUT_TOLERANCE]
    changes = at_small["prediction changes"]
    verdict = f"Models trained at batch {small}, mean of {config.seeds} seed{'s' if config.seeds > 1 else ''}. "
    if exact:
        verdict += "No difference between the modes (to float precision) for " + ", ".join(f"**{m}**" for m in exact) + ": they use no batch statistics. "
    if "BN" in changes.index and "Batch Renorm" in changes.index:
        verdict += f"BN changes **{format_percent(changes['BN'])}** of the predictions, Batch Renorm **{format_percent(changes['Batch Renorm'])}**"
        if "ghost BN" in changes.index:
            verdict += f", ghost BN **{format_percent(changes['ghost BN'])}**"
        verdict += "."
        renorm_rows = summary[summary["model"] == "Batch Renorm"]
        unclipped = renorm_rows[renorm_rows["mean |logit change|"] < SAME_OUTPUT_TOLERANCE]["batch size"].tolist()
        if unclipped:
            verdict += (f" Batch Renorm's train-mode outputs equal its eval-mode ones (mean |logit change| below {SAME_OUTPUT_TOLERANCE:g}) at batch size{'s' if len(unclipped) > 1 else ''} "
                        f"{', '.join(map(str, unclipped))}: there r and d stay inside their limits, so x̂ = (x − μ)/σ exactly; where the batch statistics are too far off, the clip leaves a gap.")
    st.markdown(verdict)
    downloads("small_batches", config, {"Accuracy and mismatch by batch size": summary, "Accuracy per seed": seed_frame(result)}, title="Download the sweep's data and config")


small_batch_sweep()

# ----------------------------------------------------------------- 2. the Bessel factor
@section("bessel")
def bessel_section():
    bessel_mark = chart_mark()
    st.header("2. The Bessel factor: biased in training, unbiased in running_var")
    st.markdown(
        "PyTorch's BN normalises a training batch of m values with the **biased** variance $s^2 = \\frac1m\\sum_i (x_i-\\mu_B)^2$, "
        "but stores the **unbiased** $s^2\\,\\frac{m}{m-1}$ in `running_var`. Suppose the running statistics are exactly one batch's own "
        "(momentum 1, one pass) and that same batch is evaluated: eval mode divides by $\\sqrt{s^2 m/(m-1)}$ instead of $\\sqrt{s^2}$, "
        "so every BN output's spread around its mean shrinks by $\\sqrt{(m-1)/m}$ (ε aside). The means stay exact: a BN output's batch mean is β in both modes."
    )
    st.markdown(
        "Through a chain of L BN layers with identity activations the shrink compounds. Layer l's input is a linear map of layer l−1's output, so its "
        "spread arrives already shrunk by $c_{l-1}$, while its batch mean equals the stored one; layer l divides by the stored (unbiased) spread, "
        "one more factor $\\sqrt{(m-1)/m}$:"
    )
    st.latex(r"c_l = c_{l-1}\sqrt{\tfrac{m-1}{m}} \;\Rightarrow\; \frac{\lVert y^{(L)}_{\text{eval}} - \bar y\rVert}{\lVert y^{(L)}_{\text{train}} - \bar y\rVert} = \left(\frac{m-1}{m}\right)^{L/2}, \qquad \frac{\mathrm{Var}_{\text{eval}}}{\mathrm{Var}_{\text{train}}} = \left(\frac{m-1}{m}\right)^{L}")
    st.markdown(
        f"The exponent is **L/2** for the output's scale (standard deviation) and **L** for its variance. So the often quoted (63/64)^10 = "
        f"{(63 / 64) ** 10:.3f} is the scale after **20** layers at m = 64 (or the variance after 10): {closed_form_ratio(64, 20):.3f}."
    )
    draw_chart(st, closed_form_heatmap(), width="stretch")

    defaults_bessel = BesselConfig()
    b1, b2, b3, b4 = st.columns(4)
    with b1:
        depth = controls.slider("Depth (BN layers)", "depth", 1, MAX_DEPTH, defaults_bessel.depth)
    with b2:
        width = controls.select("Width", "width", [16, 32, 64, 128], defaults_bessel.width, slider=True)
    with b3:
        bessel_steps = controls.select(f"Training steps (batches of {TRAIN_BATCH_SIZE})", "b_steps", [10, 50, 100, 300, 1000], defaults_bessel.steps, slider=True)
    with b4:
        eps = controls.select("BN's ε", "eps", [1e-5, 1e-8, 1e-12], defaults_bessel.eps, slider=True, format_func=lambda v: f"{v:g}" + (" (torch's)" if v == 1e-5 else ""))
    bessel_config = defaults_bessel.replace(depth=depth, width=width, steps=bessel_steps, eps=eps)
    st.caption(
        f"Measured on a real network: a {depth}-hidden-layer MLP ({width} units each, BN before an **identity** activation, so the chain is linear) trained "
        f"{bessel_steps} Adam steps by bnviz's trainer. Then, on a copy in float64, for each m: every BN layer gets momentum 1, one train-mode pass over a batch of m "
        "test digits stores that batch's own statistics, and the same batch goes through in eval mode. Per layer: eval-mode spread / train-mode spread."
    )
    bessel = run_experiment("bessel_mismatch", bessel_config, label="Deep BN chain")
    sizes_b = list(bessel_config.probe_batch_sizes)
    relative = np.abs(bessel.measured / bessel.closed - 1)
    k1, k2, k3 = st.columns(3)
    if 64 in sizes_b:
        i64 = sizes_b.index(64)
        k1.metric(f"m = 64, after {depth} layer{'s' if depth > 1 else ''}: measured", f"{bessel.measured[i64, -1]:.4f}",
                  delta=f"closed form (63/64)^({depth}/2) = {bessel.closed[i64, -1]:.4f}", delta_color="off")
    well = [m for i, m in enumerate(sizes_b) if np.all(relative[i] < AGREEMENT)]
    worst_well = max((float(relative[sizes_b.index(m)].max()) for m in well), default=float("nan"))
    k2.metric("Largest relative error where it holds", f"{worst_well:.1e}" if np.isfinite(worst_well) else "n/a",
              delta=f"m = {', '.join(map(str, well))}: every layer" if well else "no m holds at every layer", delta_color="off")
    broken = [(m, int(np.argmax(relative[i] >= AGREEMENT)) + 1) for i, m in enumerate(sizes_b) if np.any(relative[i] >= AGREEMENT)]
    if broken:
        k3.metric("Departs by ≥ 1%", ", ".join(f"m = {m} from layer {layer}" for m, layer in broken), delta=f"ε = {eps:g}", delta_color="off")
    else:
        k3.metric("Departs by ≥ 1%", "nowhere", delta=f"ε = {eps:g}, {depth} layers", delta_color="off")
    draw_chart(st, bessel_chart(bessel), width="stretch")
    clipped = int(np.sum(bessel.measured > 10))
    text = "Every measured diamond is computed from the network's own outputs; the lines are ((m−1)/m)^(l/2)"
    text += f" ({clipped} measured value{'s' if clipped > 1 else ''} above 10 on the chart's top edge). " if clipped else ". "
    if well:
        text += f"The batch means of the two modes differ by at most {np.max(bessel.mean_gap[[sizes_b.index(m) for m in well]]):.1e} where the closed form holds. "
    if broken:
        text += (
            f"Where it departs ({', '.join(f'm = {m}' for m, _ in broken)}): with so few values some units' batch spread comes near √ε = {np.sqrt(eps):.0e}, "
            f"where ε is not negligible, and float rounding is never zero; with m = {broken[0][0]} the eval-mode chain amplifies such small differences from one layer to the next "
            f"(largest gap between the modes' batch means there: {np.max(bessel.mean_gap[[sizes_b.index(m) for m, _ in broken]]):.1e})."
            + (" Try a smaller ε: the closed form then holds deeper." if eps > 1e-12 else "")
        )
    st.markdown(text)
    st.caption(f"The deep linear MLP reached {format_percent(bessel.run.final_test_acc)} test accuracy (eval mode); training it only makes the weights realistic, the factor does not depend on them.")
    downloads("bessel_mismatch", bessel_config, {"Measured and closed form": bessel_frame(bessel), "Closed form, m 2-256, depth 1-20": closed_form_frame()}, title="Download the Bessel data and config")


bessel_section()

source_expander(renorm_limits, BatchRenorm1d.forward, GhostBatchNorm1d.forward, TrainEvalMismatch.after_eval, BesselProbe.after_eval, closed_form_ratio)
with notes_slot:
    controls.show_notes()
device_caption()
