"""BN pitfalls in real code: the forward pass that changes a model, label-shifted test batches,
and deep plain networks at initialization. Every number below comes from a run."""
import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import chart_mark, Controls, device_caption, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, source_expander
from bnviz.charts.pitfalls import (batch_size_chart, batch_size_frame, depth_chart, depth_frame, label_shift_chart, label_shift_frame,
                                   layer_norms_chart, layer_norms_frame, running_stats_chart, running_stats_frame, switches_chart, switches_frame)
from bnviz.experiments.bn_switches import DROPOUT_RATE, FULL_BN, MARGIN as SWITCH_MARGIN, PartialBatchNorm, SwitchesConfig, paired_verdict
from bnviz.experiments.distribution_shift import SHIFT_OPTIONS
from bnviz.experiments.forward_pass_pitfall import (ACCURACY_MARGIN, EVAL_PASS, SWEEP_EXAMPLES, GRAD_PASS, NO_GRAD_PASS, PASS_OVER, ForwardPassConfig,
                                                    GradSwitchedBatchNorm, accuracy_verdict, stats_verdict)
from bnviz.experiments.init_gradients import GROWTH_MARGIN, RELU_BN_GROWTH_ESTIMATE, VARIANTS, InitGradientsConfig, growth_factor, growth_verdict
from bnviz.experiments.label_shift import DATA, MARGIN, METHODS, LabelShiftConfig, compare, tent_predict
from bnviz.formatting import format_points

st.title("BN pitfalls in real code")
preset_links("common_pitfalls")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "The BN bugs people report most are not in the equations: an evaluation loop that forgets `model.eval()`, "
    "the belief that `torch.no_grad()` freezes BN, test batches that are small or hold only a few classes, and deep "
    "plain networks whose gradients blow up before training starts. Each is shown live below on the same small MNIST models."
)

# ---------------------------------------------------------------- 1. the forward pass that changed my model
controls = Controls("pitfalls")


@section("forward_pass")
def forward_pass_section():
    st.header("1. The forward pass that changed my model")
    fp_defaults = ForwardPassConfig()
    with st.expander("Settings of this experiment", expanded=False):
        c1, c2, c3 = st.columns(3)
        with c1:
            pass_over = controls.select("The accidental pass goes over", "pass", PASS_OVER, fp_defaults.pass_over,
                                        help="'one digit at a time' is a per-class accuracy loop: digit 0's test images, then 1's, and so on.")
        with c2:
            pass_batch = controls.select("Batch size of the pass", "pass_batch", [2, 10, 32, 100, 500], fp_defaults.pass_batch_size)
        with c3:
            fp_seeds = controls.slider("Seeds", "fp_seeds", 1, 5, fp_defaults.seeds, help="Each seed trains its own model.")
            fp_steps = controls.select("Training steps", "fp_steps", [50, 100, 300, 1000, 3000], fp_defaults.steps)
    controls.show_notes()
    fp_config = page_config(fp_defaults, pass_over=pass_over, pass_batch_size=pass_batch, seeds=fp_seeds, steps=fp_steps)
    start = chart_mark()

    st.code(
        "model.train()                # (or simply never called model.eval())\n"
        "with torch.no_grad():        # stops gradients, NOT BatchNorm's buffer updates\n"
        "    for x, y in test_loader:\n"
        "        correct += (model(x).argmax(1) == y).sum()\n\n"
        "# the one-line fix: model.eval() before the loop",
        language="python",
    )
    fp = run_experiment("forward_pass_pitfall", fp_config, label=f"Training {fp_seeds} BN model(s)")
    before, no_grad_after, fixed_after = fp.accuracy_before.mean(), fp.accuracy_after[NO_GRAD_PASS].mean(), fp.accuracy_after[EVAL_PASS].mean()
    columns = st.columns(3)
    columns[0].metric("Eval-mode accuracy before the pass", format_percent(before), help=f"Mean over {fp_seeds} seed(s), the whole test set.")
    columns[1].metric("After one pass in train mode under no_grad", format_percent(no_grad_after), delta=format_points(no_grad_after - before))
    columns[2].metric("After the same pass with model.eval() first", format_percent(fixed_after), delta=format_points(fixed_after - before))

    moved = fp.stat_change[NO_GRAD_PASS]
    stats_word = stats_verdict(fp)
    accuracy_word = accuracy_verdict(fp.change(NO_GRAD_PASS))
    if stats_word == "moves under no_grad":
        st.markdown(
            f"**Verdict: the running statistics move under `torch.no_grad()`.** In every one of the {fp_seeds} seed(s), the train-mode pass "
            f"changed some running mean or variance by up to **{moved.max():.3g}** (smallest seed: {moved.min():.3g}); with `model.eval()` first, "
            f"the largest change was **{fp.stat_change[EVAL_PASS].max():.3g}**."
        )
    else:
        st.markdown("**Verdict: inconclusive**: in some seed the running statistics did not move beyond the tolerance, or moved in eval mode.")
    accuracy_text = {
        "drops": f"the later eval-mode accuracy **drops** in every seed (rule: every seed's change below −{100 * ACCURACY_MARGIN:.1f} points)",
        "rises": f"the later eval-mode accuracy **rises** in every seed (rule: every seed's change above +{100 * ACCURACY_MARGIN:.1f} points)",
        "within margin": f"the later eval-mode accuracy stays **within ±{100 * ACCURACY_MARGIN:.1f} points** in every seed: the test images' statistics are close to the training set's",
        "inconclusive": f"the accuracy change is **inconclusive** (not beyond ±{100 * ACCURACY_MARGIN:.1f} points the same way in every seed)",
    }[accuracy_word]
    changes = ", ".join(f"{100 * c:+.2f}" for c in fp.change(NO_GRAD_PASS))
    st.markdown(
        f"After a pass over the {'test set digit by digit' if pass_over == 'one digit at a time' else 'test set in order'} in batches of {pass_batch}, "
        f"{accuracy_text} (per seed: {changes} points). The same pass with gradients on gives "
        + ("**exactly the same buffers**" if fp.same_buffers_with_and_without_grad else "**different buffers**")
        + ": gradients have nothing to do with it. BN's train-mode forward updates `running_mean` and `running_var` with momentum "
        f"{fp_config.model().bn_momentum:g}, so after the pass they describe the last ~{round(1 / fp_config.model().bn_momentum)} batches it saw."
    )
    draw_chart(st, running_stats_chart(fp))

    st.subheader("The textbook counter-example: BN that switches on torch.is_grad_enabled()")
    st.markdown(
        "The from-scratch BN of *Dive into Deep Learning* (d2l.ai, \"Batch Normalization\") picks batch or moving statistics with "
        "`torch.is_grad_enabled()`, not with `self.training`. Under `no_grad` it uses the moving statistics even in train mode, so the "
        "pitfall above cannot happen to it; but it **ignores `model.eval()`**: any forward pass with gradients on uses and updates batch "
        "statistics. The same trained weights, the same pass, each of the four combinations (seed 0):"
    )
    rows = []
    for row in fp.grad_switched:
        rows.append({"layer": row["layer"], "mode": row["mode"], "torch.no_grad()": "yes" if row["no_grad"] else "no",
                     "normalises with": "the batch's statistics" if row["uses_batch_stats"] else "the running statistics",
                     "running statistics moved": "yes" if row["moved"] else "no", "accuracy during the pass": format_percent(row["accuracy_during"]),
                     "eval accuracy after": format_percent(row["accuracy_after"])})
    st.dataframe(pd.DataFrame(rows), hide_index=True, width="stretch")
    d2l_surprise = next(r for r in fp.grad_switched if r["layer"] != "nn.BatchNorm1d" and r["mode"] == "eval mode" and not r["no_grad"])
    if d2l_surprise["moved"]:
        st.markdown(
            f"Read the last row: in **eval mode**, without `no_grad` (e.g. computing a validation loss for a plot), d2l's layer normalised with "
            f"batch statistics and rewrote its moving averages; the predictions made during that pass were {format_percent(d2l_surprise['accuracy_during'])} right."
        )

    st.subheader("Forgetting model.eval() at test time")
    draw_chart(st, batch_size_chart(fp))
    sizes = [b for b in fp.config.test_batch_sizes if b not in fp.refused_batch_sizes]
    means = fp.train_mode_accuracy.mean(axis=0)
    defined = {b: m for b, m in zip(fp.config.test_batch_sizes, means) if b in sizes}
    if defined:
        worst = min(defined, key=defined.get)
        st.markdown(
            f"In train mode every test batch is normalised with its own statistics, so a prediction depends on the batch-mates: at batch "
            f"size {worst} the accuracy is {format_percent(defined[worst])}, at {max(defined)} it is {format_percent(defined[max(defined)])}, "
            f"against {format_percent(before)} in eval mode at any batch size (mean over seeds; train mode scored on the first {SWEEP_EXAMPLES:,} test images)."
        )
    for size, message in fp.refused_batch_sizes.items():
        st.info(f"A test batch of **{size}** in train mode: PyTorch refuses it (`ValueError: {message}`): the variance of one value per unit carries no information, and its unbiased estimate would divide by m − 1 = 0.")
    downloads("forward_pass_pitfall", fp_config, {"Running statistics before and after": running_stats_frame(fp), "Train-mode accuracy by batch size": batch_size_frame(fp)},
              title="Download this section's data and config", charts=(start, chart_mark()))
    source_expander(GradSwitchedBatchNorm, stats_verdict, accuracy_verdict)


forward_pass_section()

# ---------------------------------------------------------------- 2. label-shifted test batches
@section("label_shift")
def label_shift_section():
    st.header("2. Label-shifted test batches")
    ls_defaults = LabelShiftConfig()
    with st.expander("Settings of this experiment", expanded=False):
        c1, c2, c3 = st.columns(3)
        with c1:
            shift = controls.select("Covariate shift of the 'shifted digits'", "shift", [s for s in SHIFT_OPTIONS if s != "digits"], ls_defaults.model.shift)
        with c2:
            strength = controls.select("Shift strength", "strength", [0.25, 0.5, 0.75, 1.0], ls_defaults.model.strength)
        with c3:
            ls_seeds = controls.slider("Seeds", "ls_seeds", 1, 5, ls_defaults.seeds)
            ls_steps = controls.select("Training steps", "ls_steps", [100, 200, 400, 1000], ls_defaults.model.steps)
            tent_steps = controls.select("TENT steps per batch", "tent", [1, 3, 10], ls_defaults.tent_steps, help="Adam steps on the entropy of the batch's predictions, updating only BN's γ and β.")
    controls.show_notes()
    ls_config = page_config(ls_defaults, model=ls_defaults.model.replace(shift=shift, strength=strength, steps=ls_steps), seeds=ls_seeds, tent_steps=tent_steps)
    start = chart_mark()
    st.markdown(
        f"Test-time adaptation by batch statistics assumes each test batch is a fair sample. Here each test batch of {ls_config.batch_size} images holds "
        f"only {', '.join(map(str, ls_config.class_counts[:-1]))} or {ls_config.class_counts[-1]} digits (chosen at random per batch, "
        f"{ls_config.batches} batches each), on clean digits and on digits with a **{shift}** shift of strength {strength:g}. The model is the "
        f"distribution-shift page's (ReLU MLP, BN after each activation, {ls_config.model.steps} training steps). **Eval mode** uses the training "
        "set's running statistics; **batch statistics** normalise each test batch by its own; **AdaBN** re-estimates the statistics once on the "
        f"whole unlabeled test stream; **TENT** (Wang et al. 2021) takes {tent_steps} Adam step(s) (lr {ls_config.tent_lr:g}) on the entropy of each batch's "
        "predictions, updating only γ and β, with batch statistics (episodic: each batch starts from the trained model)."
    )
    ls = run_experiment("label_shift", ls_config, label=f"Training {ls_seeds} BN model(s), then adapting")
    draw_chart(st, label_shift_chart(ls))
    st.caption("Lines: mean over seeds; bars: lowest to highest seed.")
    verdicts = []
    for data in DATA:
        for method in METHODS[1:]:
            difference = ls.difference(data, method)
            for i, k in enumerate(ls_config.class_counts):
                verdicts.append({"test images": data, "method": method, "digits per batch": k,
                                 "mean difference vs eval mode (points)": round(100 * float(difference[:, i].mean()), 1),
                                 "verdict": compare(difference[:, i])})
    table = pd.DataFrame(verdicts)
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(f"Rule: “helps” / “hurts” when every one of the {ls_seeds} seed(s) is more than {100 * MARGIN:.0f} point above / below eval mode; otherwise inconclusive.")


    def cell(data: str, method: str, k: int) -> dict:
        return next(v for v in verdicts if v["test images"] == data and v["method"] == method and v["digits per batch"] == k)


    fewest, most = ls_config.class_counts[0], ls_config.class_counts[-1]
    PLURAL = {"helps": "help", "hurts": "hurt", "inconclusive": "are inconclusive"}  # the verdict word with "batch statistics" as subject
    clean_few, shifted_most = cell("clean digits", "batch statistics", fewest), cell("shifted digits", "batch statistics", most)
    st.markdown(
        f"On clean digits with {fewest} digit(s) per batch, batch statistics **{PLURAL[clean_few['verdict']]}** "
        f"({clean_few['mean difference vs eval mode (points)']:+.1f} points): a batch's mean and variance then describe *which digits* it holds, and "
        f"normalising that away removes what the classifier needs. On shifted digits with {most} digits per batch they **{PLURAL[shifted_most['verdict']]}** "
        f"({shifted_most['mean difference vs eval mode (points)']:+.1f} points): there the statistics carry the covariate shift, and re-estimating them undoes it. "
        f"AdaBN pools the whole stream, so it keeps the correction and loses less to the label skew "
        f"({cell('shifted digits', 'AdaBN', fewest)['mean difference vs eval mode (points)']:+.1f} points on shifted digits at {fewest} digit(s) per batch)."
    )
    tent_gap = max(abs(cell(d, "TENT", k)["mean difference vs eval mode (points)"] - cell(d, "batch statistics", k)["mean difference vs eval mode (points)"])
                   for d in DATA for k in ls_config.class_counts)
    st.markdown(
        f"TENT's {tent_steps} entropy step(s) per batch moved its accuracy at most **{tent_gap:.1f} points** from plain batch statistics (means over seeds); "
        "the rest of its gain or loss is that of the batch statistics it normalises with."
    )
    downloads("label_shift", ls_config, {"Accuracy by digits per batch": label_shift_frame(ls), "Verdicts": table}, title="Download this section's data and config", charts=(start, chart_mark()))
    source_expander(tent_predict, compare)


label_shift_section()

# ---------------------------------------------------------------- 3. BN at initialization in deep plain networks
@section("init_grads")
def init_gradients_section():
    st.header("3. BN at initialization in deep plain networks")
    ig_defaults = InitGradientsConfig()
    with st.expander("Settings of this experiment", expanded=False):
        c1, c2, c3 = st.columns(3)
        with c1:
            width = controls.select("Units per layer", "width", [32, 64, 128, 256, 512], ig_defaults.width)
        with c2:
            ig_batch = controls.select("Batch size", "ig_batch", [8, 32, 128, 512], ig_defaults.batch_size)
        with c3:
            ig_seeds = controls.slider("Seeds", "ig_seeds", 1, 10, ig_defaults.seeds)
    controls.show_notes()
    ig_config = page_config(ig_defaults, width=width, batch_size=ig_batch, seeds=ig_seeds)
    start = chart_mark()
    st.markdown(
        f"No training: one batch of {ig_batch} test images through freshly initialised ReLU MLPs of {', '.join(map(str, ig_config.depths))} hidden layers "
        f"({width} units, He-normal weights), one backward pass, and the gradient's norm at each hidden layer's output. **BN**: BN in every layer, no skip "
        "connections (Yang et al. 2019, *A Mean Field Theory of Batch Normalization*: the gradient grows exponentially with depth at initialization). "
        "**no BN**: the same network without it. **SkipInit** (De & Smith 2020): no normalization, each block a residual branch scaled by a learnable "
        "scalar that starts at 0."
    )
    ig = run_experiment("init_gradients", ig_config, label="Backpropagating through fresh networks")
    deepest = ig.deepest
    columns = st.columns(len(VARIANTS))
    for column, variant in zip(columns, VARIANTS):
        growth = ig.growth[variant]
        column.metric(f"{variant}: growth per layer ({deepest} layers)", f"{growth.mean():.3f}", help=f"(g_2 / g_L)^(1/(L−2)), mean over {ig_seeds} seed(s); range {growth.min():.3f}–{growth.max():.3f}.")
    words = {"grows": f"grows (every seed above {1 + GROWTH_MARGIN:g})", "flat": f"stays flat (every seed within {1 - GROWTH_MARGIN:g}–{1 + GROWTH_MARGIN:g})",
             "shrinks": f"shrinks (every seed below {1 - GROWTH_MARGIN:g})", "inconclusive": "is inconclusive (seeds disagree about the margin)"}
    st.markdown(
        "**Verdict**, per layer towards the input: "
        + "; ".join(f"{variant}: the gradient {words[growth_verdict(ig.growth[variant])]}" for variant in VARIANTS)
        + f". With BN, the first layer's gradient is **{ig.first_to_last('BN', deepest).mean():.3g}×** the last layer's at {deepest} layers."
    )
    st.markdown(
        f"Beside it, a back-of-the-envelope estimate for ReLU with BN (K. Luther 2020, \"Why BatchNorm causes exploding gradients\", after Yang et al.): "
        f"BN divides the backward signal by its input's batch standard deviation, which after a ReLU layer is √((π−1)/π) of the weights' scale, so the gradient "
        f"norm grows by √(π/(π−1)) = **{RELU_BN_GROWTH_ESTIMATE:.3f}** per layer; measured here: **{ig.growth['BN'].mean():.3f}**. "
        "(Yang et al.'s own statement of the rate was not checked for this page.)"
    )
    view_options = list(ig_config.depths)
    if st.session_state.get("pitfalls.ig_view") not in view_options:
        st.session_state["pitfalls.ig_view"] = deepest
    view_depth = controls.select("Network shown per layer", "ig_view", view_options, deepest, format_func=lambda d: f"{d} hidden layers")
    left, right = st.columns(2)
    draw_chart(left, layer_norms_chart(ig, view_depth), width="stretch")
    draw_chart(right, depth_chart(ig), width="stretch")
    st.caption("Lines: mean over seeds; band: lowest to highest seed. SkipInit's blocks are the identity at initialization, so its gradient reaches every layer unchanged.")
    downloads("init_gradients", ig_config, {"Gradient norm per layer": layer_norms_frame(ig, view_depth), "First over last layer by depth": depth_frame(ig)},
              title="Download this section's data and config", charts=(start, chart_mark()))
    source_expander(growth_factor, growth_verdict)


init_gradients_section()

# ---------------------------------------------------------------- 4. the textbook's exercises as switches
@section("switches")
def switches_section():
    st.header("4. The textbook's exercises as switches")
    sw_defaults = SwitchesConfig()
    with st.expander("Settings of this experiment", expanded=False):
        c1, c2, c3 = st.columns(3)
        with c1:
            sw_steps = controls.select("Training steps", "sw_steps", [100, 300, 1000, 2000], sw_defaults.steps)
        with c2:
            sw_lr = controls.select("Learning rate (SGD)", "sw_lr", [0.03, 0.1, 0.3, 1.0], sw_defaults.lr)
        with c3:
            sw_seeds = controls.slider("Seeds", "sw_seeds", 2, 5, sw_defaults.seeds)
    controls.show_notes()
    sw_config = page_config(sw_defaults, steps=sw_steps, lr=sw_lr, seeds=sw_seeds)
    start = chart_mark()
    st.markdown(
        f"The same ReLU MLP ({sw_config.depth} hidden layers of {sw_config.width}, BN before each activation) trained {sw_steps} SGD steps at learning rate "
        f"{sw_lr:g}, once per switch and seed, each seed from the same initial weights on the same batches. Each switch takes one part of BN away: "
        "its centring, its division, its trained γ/β, BN in the deeper layers, the linear bias before it; or adds dropout "
        f"(rate {DROPOUT_RATE:g}) before each BN layer (Li et al. 2019), or trains *only* γ and β over frozen random weights (Frankle et al. 2020)."
    )
    sw = run_experiment("bn_switches", sw_config, label=f"Training {len(sw_config.switches) * sw_seeds} models")
    draw_chart(st, switches_chart(sw), width="stretch")
    reference = sw.accuracy[FULL_BN]
    sw_rows = [{"switch": switch, "mean accuracy": format_percent(float(np.nanmean(values))),
                "per seed": ", ".join(format_percent(v) for v in values),
                "vs full BN": "(the reference)" if switch == FULL_BN else paired_verdict(values, reference)} for switch, values in sw.accuracy.items()]
    sw_table = pd.DataFrame(sw_rows)
    st.dataframe(sw_table, hide_index=True, width="stretch")
    st.caption(f"Rule, paired by seed: “worse” / “better” when every one of the {sw_seeds} seeds is more than {100 * SWITCH_MARGIN:.0f} point below / above full BN; "
               f"“within margin” when every seed is within {100 * SWITCH_MARGIN:.0f} point; otherwise inconclusive.")
    if sw.variance_shift is not None:
        shift_by_layer = sw.variance_shift.mean(axis=0)
        st.markdown(
            "**Dropout's variance shift, measured.** BN's running variance was gathered in train mode, with dropout on; at test time dropout is off, "
            "and the variance of what reaches BN changes. Running variance over the test-time variance, per BN layer after the first (mean over seeds): "
            + ", ".join(f"layer {i + 2}: **{v:.2f}×**" for i, v in enumerate(shift_by_layer))
            + " (1 would be no shift)"
            + (": at test time BN divides by a standard deviation that no longer fits." if np.all(np.abs(shift_by_layer - 1) > 0.05) else ".")
        )
    downloads("bn_switches", sw_config, {"Final accuracy per switch": switches_frame(sw), "Verdicts": sw_table}, title="Download this section's data and config", charts=(start, chart_mark()))
    source_expander(PartialBatchNorm, paired_verdict)


switches_section()

device_caption()
