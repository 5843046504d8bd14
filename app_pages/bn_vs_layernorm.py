"""BN vs LayerNorm (and Group, Instance): which values each one pools, and where each one wins."""
import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import Controls, budget_help, chart_mark, curve_panels, device_caption, diverged_sweep_warning, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, shared_with_page, source_expander, verdict_cell_style
from bnviz.formatting import format_points
from bnviz.charts import curve_records
from bnviz.charts.norm_axes import batch_size_chart, batch_size_frame, padded_chart, padded_frame, pooled_moments_frame, sets_frame, sets_grid, sets_takeaway
from bnviz.experiments.norm_axes import METHODS, SPATIAL_SIDE, TIME_STEPS, WIDTH, NormAxesConfig, normalize_by_sets, set_moments, statistic_sets
from bnviz.experiments.norm_comparison import FULL_BATCH_SIZES, GN_PAPER_BN_ERROR, GN_PAPER_GN_ERROR, LIGHT_BATCH_SIZES, SAME_OUTPUT_TOLERANCE, SWEEP_NORMS, NormComparisonConfig
from bnviz.experiments.sequence_norms import EVAL_EXAMPLES, PLACES, SequenceNormsConfig, training_length_sentence
from bnviz.models import PerStepNorm, RecurrentBlock, model_label

# What each method pools over, per layout: definitions (torch's conventions), not results.
POOLS_OVER = {
    "image": {"batch": "per channel, over examples and positions", "layer": "per example, over channels and positions", "instance": "per example and channel, over positions", "group": "per example and group of channels, over positions"},
    "features": {"batch": "per feature, over the examples", "layer": "per example, over its features", "instance": "per example and feature: one value each (output 0)", "group": "per example and group of features"},
    "sequence": {"batch": "per time step and feature, over the examples", "layer": "per example and time step, over features", "instance": "per example and feature, over all time steps (needs the whole sequence)", "group": "per example, time step and group of features"},
}


def same_or_not(difference: float) -> str:
    if not np.isfinite(difference):
        return "n/a"
    return "identical" if difference <= SAME_OUTPUT_TOLERANCE else f"**differs** (max logit change {difference:.2f})"


def clamp_state(key: str, high: int) -> None:
    """A slider whose range shrank (another control changed) keeps a valid value."""
    if st.session_state.get(key, 0) > high:
        st.session_state[key] = high


st.title("BN vs LayerNorm (and Group, Instance)")
preset_links("bn_vs_layernorm")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "All four layers compute the same thing, $\\hat x = (x - \\mu_S)/\\sqrt{\\sigma_S^2 + \\epsilon}$, "
    "then scale and shift by learned γ, β. They differ only in the **set S** of values that share one mean and variance. "
    "**BN** pools each feature *across the batch*; **LayerNorm** pools each example *across its features*; "
    "**InstanceNorm** each example's each channel across positions; **GroupNorm** each example's groups of channels. "
    "The common wisdom: BN for CNNs, LayerNorm for RNNs. Below: the sets, then runs that test the wisdom."
)
st.latex(r"\mu_S = \frac{1}{|S|}\sum_{j \in S} x_j, \qquad \sigma_S^2 = \frac{1}{|S|}\sum_{j \in S} (x_j - \mu_S)^2 \quad\text{(biased, as torch normalises)}, \qquad \epsilon = 10^{-5}")
controls = Controls("norms")
notes_slot = st.container()  # a link's out-of-range values are reported here, once every control has read the URL

sweep_result = None  # set by the sweep's section; sections 3 and 4 read it

# ------------------------------------------------------------------ 1. the axes
@section("axes")
def axes_section():
    st.header("1. Which values share one mean and variance")
    defaults_axes = NormAxesConfig()
    c1, c2, c3 = st.columns(3)
    with c1:
        layout = controls.radio("Tensor", "layout", ["image", "features", "sequence"], defaults_axes.layout, horizontal=True,
                                format_func={"image": "conv (N, C, H, W)", "features": "MLP (N, features)", "sequence": "RNN (N, time, features)"}.get)
        batch = controls.slider("Examples in the batch (N)", "n", 2, 8, defaults_axes.batch)
    with c2:
        groups = controls.select("GroupNorm groups", "groups", [1, 2, 4, 8], defaults_axes.groups, slider=True,
                                 help=f"{WIDTH} channels: 1 group is LayerNorm, {WIDTH} groups is InstanceNorm.")
    with c3:
        clamp_state("norms.hx", batch - 1)
        example = controls.slider("Chosen value: example", "hx", 0, batch - 1, 0) if batch > 1 else 0
        channel = controls.slider("Chosen value: channel / feature", "hc", 0, WIDTH - 1, 0)
        positions = {"image": SPATIAL_SIDE * SPATIAL_SIDE, "sequence": TIME_STEPS, "features": 1}[layout]
        position = 0
        if positions > 1:
            clamp_state("norms.hp", positions - 1)
            position = controls.slider("Chosen value: position" if layout == "image" else "Chosen value: time step", "hp", 0, positions - 1, 0)
    axes_config = NormAxesConfig(layout=layout, batch=batch, groups=groups)
    axes = run_experiment("norm_axes", axes_config, label="Computing")
    highlight = {"image": (example, channel, *divmod(position, SPATIAL_SIDE)), "features": (example, channel), "sequence": (example, position, channel)}[layout]
    st.caption(
        {"image": "Real activations: a freshly initialised 3×3 conv layer (8 channels) on test digits pooled to 4×4; position = row × 4 + column.",
         "features": "Real activations: a freshly initialised 784 → 8 fully connected layer on test digits.",
         "sequence": "Real activations: each of 7 pooled image rows through a 7 → 8 layer (a recurrent layer's input term W x_t + b)."}[layout]
        + " The coloured cells share one mean and variance with the chosen value; grey shades alternate between the other sets. Hover a cell for its value before and after."
    )
    for method in METHODS:
        ids = axes.set_ids[method]
        title = f"{model_label(method)}: {len(np.unique(ids))} sets of {axes.set_size(method)} values ({POOLS_OVER[layout][method]})"
        if method == "group":
            title += f", {groups} group{'s' if groups > 1 else ''} of {WIDTH // groups}"
        draw_chart(st, sets_grid(axes, method, highlight, title), takeaway=sets_takeaway(axes, method, highlight), width="content")
    st.markdown(
        "**The same activations normalised four ways**, then measured over each method's sets: average |mean| and average variance. "
        "A method gives mean 0 and variance 1 over its own sets (the diagonal, unless a set is constant); over another method's sets generally not."
    )
    st.table(pooled_moments_frame(axes).set_index("output of"))
    standardised = [
        f"{model_label(by)} over {model_label(over)} sets"
        for i, by in enumerate(METHODS) for j, over in enumerate(METHODS)
        if i != j and axes.pooled_mean_abs[i, j] < 1e-6 and abs(axes.pooled_var[i, j] - 1) < 1e-3
    ]
    if standardised:
        st.caption(
            "Off the diagonal, mean 0 and variance 1 also hold for: " + "; ".join(standardised)
            + ". Each of those sets is a union of equal-sized sets of the finer method, each already standardised."
        )
    worst = max(axes.torch_max_difference.values())
    st.caption(
        f"Checked against torch's own layers (BatchNorm, LayerNorm, InstanceNorm, GroupNorm, training mode, float64): "
        f"largest difference {worst:.1e}. Sets of one value have variance 0, so their output is 0: (x − x)/√ε."
    )
    st.caption("Pooling sets:")
    downloads("norm_axes", axes_config, {f"Sets, {model_label(m)}": sets_frame(axes, m, highlight) for m in METHODS})


axes_section()

# ------------------------------------------------------------ 2. batch-size sweep
@section("batch_sweep")
def sweep_section():
    global sweep_config, sweep_result, small, large  # sections 3 and 4 read them
    sweep_mark = chart_mark()
    st.header("2. Batch size: where BN loses")
    defaults_sweep = NormComparisonConfig()
    with st.expander("Settings of the sweep", expanded=False):
        s1, s2, s3, s4 = st.columns(4)
        with s1:
            arch = controls.radio("Network", "arch", ["mlp", "cnn"], defaults_sweep.arch, format_func={"mlp": "MLP 784-100-100-10", "cnn": "small CNN (8, 16 channels)"}.get,
                                  help="The CNN is slower per step than the MLP on a CPU; it also sweeps InstanceNorm.")
        with s2:
            sweep = controls.radio("Batch sizes", "sweep", ["light", "full"], "light",
                                   format_func={"light": ", ".join(map(str, LIGHT_BATCH_SIZES)), "full": ", ".join(map(str, FULL_BATCH_SIZES))}.get)
        with s3:
            seeds = controls.slider("Seeds", "seeds", 1, 3, defaults_sweep.seeds)
        with s4:
            steps = controls.select("Training steps per run", "steps", [10, 20, 50, 100, 200, 300, 500, 1000], defaults_sweep.steps, slider=True,
                                    help=budget_help("norms × batch sizes × seeds × steps, larger batches and the CNN weigh more"))
    sweep_config = page_config(
        defaults_sweep,
        arch=arch, norms=SWEEP_NORMS if arch == "cnn" else defaults_sweep.norms, seeds=seeds, steps=steps,
        batch_sizes=FULL_BATCH_SIZES if sweep == "full" else LIGHT_BATCH_SIZES,
    )
    shared_with_page("norms.sweep", sweep_config)  # sections 3 and 4 read its result
    st.caption(
        f"{len(sweep_config.batch_sizes) * len(sweep_config.norms) * sweep_config.seeds} models, each trained {sweep_config.steps} steps with Adam "
        f"(lr {sweep_config.lr:g}), ReLU, GroupNorm with {sweep_config.groups} groups; the same number of steps at every batch size, so a larger batch sees more examples. "
        "Results are stored: a second visit, by anyone, reads them instead of training again."
    )
    sweep_result = run_experiment("norm_comparison", sweep_config, label="Batch-size sweep")
    small, large = min(sweep_config.batch_sizes), max(sweep_config.batch_sizes)
    draw_chart(st, batch_size_chart(sweep_result), width="stretch")
    diverged_sweep_warning(sweep_result.runs)


    def mean_accuracy(norm: str, index: int) -> float:
        values = sweep_result.accuracy(norm)[index]
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


    metric_columns = st.columns(len(sweep_config.norms))
    for column, norm in zip(metric_columns, sweep_config.norms):
        at_small, at_large = mean_accuracy(norm, 0), mean_accuracy(norm, -1)
        delta = f"{100 * (at_small - at_large):+.1f} points vs batch {large}" if np.isfinite(at_small) and np.isfinite(at_large) else None
        column.metric(f"{model_label(norm)}, batch {small}", format_percent(at_small), delta=delta)
    drops = {model_label(n): mean_accuracy(n, -1) - mean_accuracy(n, 0) for n in sweep_config.norms}
    finite_drops = {k: v for k, v in drops.items() if np.isfinite(v)}
    best_small = max(sweep_config.norms, key=lambda n: np.nan_to_num(mean_accuracy(n, 0), nan=-1))
    if finite_drops:
        biggest = max(finite_drops, key=finite_drops.get)
        st.markdown(
            f"From batch {large} down to batch {small}, accuracy falls by "
            + ", ".join(f"**{100 * v:.1f}** points for {k}" for k, v in finite_drops.items())
            + f". The largest fall is **{biggest}**'s; at batch {small} the best model is **{model_label(best_small)}** "
            f"({format_percent(mean_accuracy(best_small, 0))}), averaged over {sweep_config.seeds} seed{'s' if sweep_config.seeds > 1 else ''}."
        )
    st.caption(
        f"Context from the literature, not assumed here (Wu & He 2018, GroupNorm, ResNet-50 on ImageNet): BN's error rose from "
        f"{100 * GN_PAPER_BN_ERROR[32]:.1f}% at 32 examples per GPU to {100 * GN_PAPER_BN_ERROR[2]:.1f}% at 2, while GN stayed near {100 * GN_PAPER_GN_ERROR:.1f}%. "
        "Our curves are whatever our short MNIST runs give."
    )
    downloads("norm_comparison", sweep_config, {"Test accuracy by batch size": batch_size_frame(sweep_result), "Summary": pd.DataFrame(sweep_result.summary_rows())},
              title="Download the batch-size sweep's data and config")


sweep_section()

# ------------------------------------------------------- 3. train/eval consistency
@section("consistency")
def consistency_section():
    if sweep_result is None:  # the sweep's section is hidden or still computing
        return
    st.header("3. The same digit in train and eval mode")
    probe_batch = controls.select("Models trained at batch size", "probe", list(sweep_config.batch_sizes), small, slider=True)
    st.markdown(
        f"Test digit 0 through each trained model (seed 0, batch {probe_batch}): in eval mode alone and with {probe_batch - 1} batch-mate{'s' if probe_batch > 2 else ''}, "
        "in train mode (batch statistics) with two different sets of batch-mates, and alone in train mode."
    )
    for norm in sweep_config.norms:
        probe = sweep_result.consistency(norm, probe_batch)
        eval_acc, train_acc = probe["mode_accuracy"]
        alone = f"refused by torch (“{probe['train_alone_error']}”)" if probe["train_alone_error"] else same_or_not(probe["train_alone_vs_eval"]) + " to eval mode"
        st.markdown(
            f"- **{model_label(norm)}**: eval mode, alone vs in a batch: {same_or_not(probe['alone_vs_batch'])}; "
            f"train vs eval mode: {same_or_not(probe['train_eval_gap'])}; other batch-mates in train mode: {same_or_not(probe['batch_dependence'])}; "
            f"alone in train mode: {alone}. Accuracy on 256 test digits: eval mode {format_percent(eval_acc)}, train mode in batches of {probe_batch} {format_percent(train_acc)}."
        )
    st.caption(f"“Identical” means every logit within {SAME_OUTPUT_TOLERANCE:g} (float32 sums in a different order). BN in eval mode uses its running averages, so it too is independent of batch-mates there.")


consistency_section()

# ------------------------------------------------------------------ 4. summary
@section("summary")
def summary_section():
    if sweep_result is None:  # as for section 3
        return
    st.header("4. Summary, from the runs above")
    summary = pd.DataFrame(sweep_result.summary_rows())
    shown = summary.copy()
    for column in shown.columns:
        if column.startswith("test accuracy"):
            shown[column] = [format_percent(v) if np.isfinite(v) else "diverged" for v in shown[column]]
        elif column.startswith("train − eval"):
            shown[column] = [format_points(v) for v in shown[column]]
        elif column.startswith("ms/step"):
            shown[column] = [f"{v:.2f}" for v in shown[column]]
    # Short headers, so the table's last column fits the page; the caption says what each one means.
    shown = shown.rename(columns={
        f"test accuracy, batch {small}": f"accuracy, batch {small}",
        f"test accuracy, batch {large}": f"accuracy, batch {large}",
        f"train − eval accuracy, batch {small}": f"train − eval, batch {small}",
        "one example alone, train mode": "alone, train mode",
    })
    st.table(shown.set_index("norm"))
    st.caption(f"Means over {sweep_config.seeds} seed(s). Accuracy: test accuracy of the models trained with that batch size. "
               f"“train − eval” is test accuracy with batch statistics (batches of {small}) minus with running averages. "
               "“alone, train mode”: one example through the network in training mode, compared with eval mode. "
               "ms per step is measured on this machine, shared with other users, so it is noisy.")


summary_section()

# -------------------------------------------------------------------- 5. sequences
@section("rnn")
def rnn_section():
    sequence_mark = chart_mark()
    st.header("5. Sequences: a recurrent network on sequential MNIST")
    st.markdown(
        "A one-layer tanh RNN reads each digit **row by row** (28 time steps of 28 pixels) and classifies from its last state. "
        "The norm sits on each step's summed input, $h_t = \\tanh(\\mathrm{norm}_t(W x_t + U h_{t-1} + b))$. "
        "**BN** keeps separate statistics for every time step (recurrent BN, Cooijmans et al. 2016); **LayerNorm** normalises each example's state at each step (Ba et al. 2016)."
    )
    defaults_seq = SequenceNormsConfig()
    q1, q2, q3 = st.columns(3)
    with q1:
        rnn_steps = controls.select("RNN training steps (batches of 64)", "rnn_steps", [10, 20, 50, 100, 200, 500, 1000], defaults_seq.steps, slider=True,
                                    help=budget_help("3 models × steps, a larger state weighs more"))
    with q2:
        rnn_hidden = controls.select("State size", "rnn_hidden", [16, 32, 48, 64, 128], defaults_seq.hidden, slider=True)
    with q3:
        rnn_seed = controls.slider("Seed (RNN)", "rnn_seed", 0, 4, defaults_seq.seed)
    seq_config = page_config(defaults_seq, steps=rnn_steps, hidden=rnn_hidden, seed=rnn_seed, eval_every=max(rnn_steps // 10, 5))
    seq_metrics = st.container()
    left, right = st.columns(2)
    draw = curve_panels([(left, "test_acc", f"Test accuracy ({EVAL_EXAMPLES:,} test digits)"), (right, "train_loss", "Training loss")], total_steps=seq_config.steps)

    seq_result = run_experiment("sequence_norms", seq_config, live=draw, label="Training the RNNs")
    draw(seq_result.runs)
    with seq_metrics:
        columns = st.columns(len(seq_result.runs))
        for column, run in zip(columns, seq_result.runs):
            column.metric(f"RNN, {run.label}: test accuracy", format_percent(run.final_test_acc), help=f"{seq_config.steps} steps, full 10,000-digit test set; {1000 * run.seconds / max(len(run.step_loss), 1):.1f} ms per step here.")
    st.markdown(training_length_sentence(seq_result))
    for run in seq_result.runs:
        if run.diverged:
            st.warning(f"The RNN with {run.label} **diverged** at step {run.diverged_step} (loss NaN or infinite); its curve stops there.")

    st.subheader("Longer test sequences")
    draw_chart(st, padded_chart(seq_result), width="content")
    extra = seq_config.extra_rows[-1]
    before = PLACES.index("before")
    changes = {run.label: seq_result.padded_accuracy[m, before, -1] - seq_result.padded_accuracy[m, before, 0] for m, run in enumerate(seq_result.runs)}
    worst_label = min(changes, key=changes.get)
    st.markdown(
        f"With {extra} blank rows **before** the digit (the same digit, read {extra} steps later), accuracy on {EVAL_EXAMPLES:,} test digits changes by "
        + ", ".join(f"**{100 * v:+.1f}** points for {k}" for k, v in changes.items())
        + f": the largest fall is **{worst_label}**'s. Per-step BN ties its statistics to positions in the sequence: step t is normalised with the "
        "statistics of row t of the training digits, whatever it now reads, and beyond step 27 it reuses step 27's (as Cooijmans et al. do). "
        "Blank rows **after** the digit test memory instead: every model must carry the digit through the extra steps."
    )
    st.subheader("A batch of one")
    for run in seq_result.runs:
        probe = seq_result.consistency(run.label)
        alone = f"training mode refused by torch (“{probe['train_alone_error']}”)" if probe["train_alone_error"] else f"training mode alone: {same_or_not(probe['train_alone_vs_eval'])} to eval mode"
        st.markdown(f"- **{run.label}**: eval mode, one digit alone vs in a batch: {same_or_not(probe['alone_vs_batch'])}; {alone}.")
    st.caption("So BN cannot be *trained* with one sequence per batch (nor run in training mode on one), and at test time it needs the running averages; LayerNorm does the same computation for one example as for many.")
    downloads("sequence_norms", seq_config, {"RNN test accuracy": curve_records(seq_result.runs, "test_acc"), "Longer sequences": padded_frame(seq_result)},
              title="Download the recurrent networks' data and config")


rnn_section()

# ------------------------------------------------------- 6. invariance table (issue 14)
from bnviz.experiments.invariance_table import BA_ET_AL_TABLE_1, BA_ET_AL_WEIGHT_NORM, INVARIANCE_TOLERANCE, ROWS, TRANSFORMS, InvarianceConfig, layer_output, transformed  # noqa: E402


@section("invariance")
def invariance_section():
    invariance_mark = chart_mark()
    st.header("6. What each norm ignores: Ba et al.'s invariance table")
    st.markdown(
        "Ba et al. 2016 (*Layer Normalization*, Table 1) list which changes to a layer's weights or to the data leave the **normalized output** unchanged. "
        "Here each cell is measured: the first hidden layer of the paper's MLP (784 → 100), its output y = norm(Wx + b) for 256 test digits, "
        "before and after one change. A cell is **invariant** when no output of the batch moves by more than "
        f"{INVARIANCE_TOLERANCE:g} of the largest output (float64)."
    )
    inv_defaults = InvarianceConfig()
    inv_controls = Controls("norms")  # its own notes, shown under this section
    i1, i2, i3, i4 = st.columns(4)
    with i1:
        inv_delta = inv_controls.select("Re-scaling factor δ", "invdelta", [0.1, 0.5, 2.0, 10.0], inv_defaults.delta, slider=True)
    with i2:
        inv_eps = inv_controls.select("eps in √(σ² + eps)", "inveps", [1e-8, 1e-5, 1e-3], inv_defaults.eps, slider=True, format_func=lambda e: f"{e:.0e}",
                                      help="PyTorch's default is 1e-5. Torch's train-mode BN refuses eps = 0.")
    with i3:
        inv_trained = inv_controls.select("Network", "invtrained", [0, 100, 300], inv_defaults.trained_steps,
                                          format_func=lambda s: "freshly initialised" if s == 0 else f"trained {s} steps (SGD, lr 0.1)")
    with i4:
        inv_bias = inv_controls.toggle("Bias b before the norm", "invbias", inv_defaults.linear_bias,
                                       help="On: PyTorch's default nn.Linear bias. Off: as in Ba et al., whose only bias is the β after the normalization.")
    inv_controls.show_notes()
    inv_config = inv_defaults.replace(delta=inv_delta, eps=inv_eps, trained_steps=inv_trained, linear_bias=inv_bias)
    inv = run_experiment("invariance_table", inv_config, label="Transforming weights and data")
    SHORT = dict(zip(TRANSFORMS, ["W → δW", "W → W + 1gᵀ", "one unit: w_k → δw_k", "all data: x → δx", "all data: x → x + c", "one image: x₀ → δx₀"]))


    def cell_text(cell: dict) -> str:
        verdict = "invariant" if cell["invariant"] else "changes"
        mark = "" if cell["claimed"] is None else (" ✓" if cell["claimed"] == cell["invariant"] else " ✗")
        return f"{verdict} {cell['relative_diff']:.0e}{mark}"


    measured = pd.DataFrame([{"output of": row, **{SHORT[t]: cell_text(inv.cell(row, t)) for t in TRANSFORMS}} for row in ROWS]).set_index("output of")
    st.table(measured.style.map(lambda text: verdict_cell_style(text.startswith("invariant"))))
    claims = pd.DataFrame([{"Ba et al. 2016, Table 1": name, **{SHORT[t]: "invariant" if c else "—" for t, c in zip(TRANSFORMS, values)}}
                           for name, values in (("Batch norm", BA_ET_AL_TABLE_1["BN, train mode"]), ("Weight norm", BA_ET_AL_WEIGHT_NORM), ("Layer norm", BA_ET_AL_TABLE_1["LayerNorm"]))])
    st.caption("Each cell: the verdict and the largest change of an output, relative to the largest output. The colour is the measurement "
               "(green: invariant, red: the output changes); the mark compares it with Ba et al.'s Table 1: ✓ agrees (a red cell with ✓: "
               "they too say it changes), ✗ contradicts it, no mark: they make no claim. Their claims, as printed (“—”: not invariant; weight normalization is not measured here):")
    st.table(claims.set_index("Ba et al. 2016, Table 1"))
    agree, claimed = inv.agreement()
    disagreements = [c for c in inv.cells if c["claimed"] is not None and c["claimed"] != c["invariant"]]
    invariant_cells = [c for c in inv.cells if c["invariant"]]
    text = f"Measured on this network, **{agree} of Ba et al.'s {claimed} claims hold**."
    if disagreements:
        text += " They fail for " + "; ".join(f"{c['row']} under {SHORT[c['transform']]} (relative change {c['relative_diff']:.1e})" for c in disagreements) + "."
        if inv_bias and any(c["row"] == "LayerNorm" for c in disagreements):
            text += " The cause for LayerNorm is the bias b before it: LayerNorm subtracts one mean over the 100 units, but b differs from unit to unit and does not scale with W or x. Before BN, b cancels (one mean per unit), which is why BN layers are often built with `bias=False`."
        if any(c["claimed"] and "re-scaling" in c["transform"] and not (inv_bias and c["row"] == "LayerNorm") for c in disagreements):
            text += (f" With eps = {inv_eps:g} and δ = {inv_delta:g}, √(δ²σ² + eps) is no longer δ·√(σ² + eps): the re-scaling invariances hold only "
                     "while eps is small next to the variances δ²σ².")
    rescaling = [c["relative_diff"] for c in invariant_cells if "re-scaling" in c["transform"]]
    recentering = [c["relative_diff"] for c in invariant_cells if "re-centering" in c["transform"]]
    if rescaling:
        text += f" What remains in the invariant re-scaling cells (at most {max(rescaling):.1e} of the largest output) is eps inside √(σ² + eps), not rounding."
    if recentering:
        text += f" The invariant re-centering cells leave σ unchanged and differ by at most {max(recentering):.0e}: float64 rounding."
    st.markdown(text)
    bn_train_changes = [SHORT[t] for t in TRANSFORMS if not inv.cell("BN, train mode", t)["invariant"]]
    st.caption(
        "“Output” is the norm layer's output for every one of the 256 images (γ, β included; the next layers see only this, so the network's prediction is then "
        "unchanged too). BN's invariances are those of **train mode**: the batch statistics are recomputed on the changed batch. In **eval mode** BN uses fixed "
        "running statistics (here set to this batch's own before the change, so both modes agree until something changes), a fixed affine map: every change shows. "
        f"BN in train mode changes under {', '.join(bn_train_changes) or 'nothing'}. "
        "g and c are random vectors (seeded); one unit = unit 0, one image = image 0. "
        + ("The network is freshly initialised (PyTorch's default init)." if inv_trained == 0 else f"Each network (BN, LayerNorm, RMSNorm, no norm) was trained {inv_trained} steps first.")
    )
    downloads("invariance_table", inv_config, {"Invariance table": pd.DataFrame(inv.cells)}, title="Download the invariance table and config", charts=(invariance_mark, None))
    source_expander(transformed, layer_output, title="The code of the invariance table")


invariance_section()

source_expander(statistic_sets, set_moments, normalize_by_sets, PerStepNorm, RecurrentBlock)
with notes_slot:
    controls.show_notes()
device_caption()
