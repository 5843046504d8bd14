"""Before or after the nonlinearity: where to put BN, measured instead of argued."""
import streamlit as st

from bnviz.app import Controls, budget_help, device_caption, draw_chart, downloads, format_percent, page_config, preset_links, run_experiment, section, source_expander
from bnviz.charts.placement import band_chart, band_records, histogram_chart, layer_chart, layer_records, sweep_chart, sweep_records
from bnviz.diagrams import mlp_dot
from bnviz.experiments.placement import LABELS, LR_LADDER, PLACEMENT_ACTIVATIONS, PlacementConfig, paired_difference, verdict
from bnviz.recorders import NonlinearityInputs
from bnviz.train import OPTIMIZERS
from bnviz.unit_stats import FLAT_SLOPE_FRACTION

OPTIMIZER_NAMES = {"sgd": "SGD", "momentum": "SGD with momentum 0.9", "adam": "Adam"}
ACTIVATION_NAMES = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "ReLU", "gelu": "GELU", "elu": "ELU"}
# What a flat slope means for each activation, in the page's words.
FLAT_WORDS = {"sigmoid": "saturated", "tanh": "saturated", "relu": "inactive", "gelu": "inactive", "elu": "inactive"}

st.title("Before or after the nonlinearity?")
preset_links("placement")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "The original paper puts BN **before** the activation: it normalises the layer's summed input "
    "and feeds that to the nonlinearity. Many practitioners put it **after**. The arguments go both ways, "
    "so this page measures instead: three networks per seed, identical except for BN, trained side by side "
    "on MNIST over several seeds and learning rates, and a verdict computed from the runs."
)
# two aligned lines: on one, "BN after" ran out of a laptop-width page
st.latex(r"\begin{aligned} \textbf{BN before (Ioffe \& Szegedy 2015):}\quad & h = g\big(\mathrm{BN}_{\gamma,\beta}(W u + b)\big) \\ \textbf{BN after:}\quad & h = \mathrm{BN}_{\gamma,\beta}\big(g(W u + b)\big) \end{aligned}")

defaults = PlacementConfig()
controls = Controls("placement")
with st.expander("Settings of the experiment", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        activation = controls.select("Activation", "act", PLACEMENT_ACTIVATIONS, defaults.activation, format_func=ACTIVATION_NAMES.get)
        optimizer = controls.select("Optimizer", "opt", OPTIMIZERS, defaults.optimizer, format_func=OPTIMIZER_NAMES.get, help="Adam's usual learning rates are 100× smaller than SGD's: move the range down with it.")
    with c2:
        depth = controls.slider("Hidden layers", "depth", 1, 6, defaults.depth)
        width = controls.select("Units per layer", "width", [32, 64, 100, 200, 400], defaults.width)
    with c3:
        low, high = controls.select_range("Learning rates (log scale)", "lr", LR_LADDER, (min(defaults.lrs), max(defaults.lrs)), format_func=lambda v: f"{v:g}", help="Every half-decade in the range is trained.")
        batch_size = controls.select("Batch size", "batch", [16, 32, 60, 128, 256], defaults.batch_size)
    with c4:
        seeds = controls.slider("Seeds", "seeds", 2, 10, defaults.seeds, help="Each seed trains all three models from the same initial weights on the same batches.")
        steps = controls.slider("Training steps", "steps", 50, 3000, defaults.steps, step=50, help="Batches per run. Each run evaluates on 1,000 test images every tenth of its steps. "
                             + budget_help("learning rates × seeds × 3 models × steps, wider and deeper layers and larger batches weigh more"))
controls.show_notes()
lrs = tuple(lr for lr in LR_LADDER if low <= lr <= high)
config = page_config(defaults, activation=activation, optimizer=optimizer, depth=depth, width=width, lrs=lrs, batch_size=batch_size, seeds=seeds, steps=steps, eval_every=max(5, steps // 10))
act_name = ACTIVATION_NAMES[activation]

left, right = st.columns(2)
for column, placement in ((left, "before"), (right, "after")):
    column.caption(f"BN {placement} the {act_name} (the third model has no BN)")
    column.graphviz_chart(mlp_dot(config.hidden_widths, with_bn=True, activation=act_name, placement=placement))

# Which learning rate the curves show: a view of the runs, it trains nothing.
view_lr = controls.radio("Curves and verdict at learning rate", "view_lr", sorted(lrs), config.first_lr, format_func=lambda v: f"{v:g}", horizontal=True)

verdict_slot = st.container()
metric_slot = st.container()
acc_col, loss_col = st.columns(2)
acc_slot, loss_slot = acc_col.empty(), loss_col.empty()


def draw(runs, note=""):
    lr = runs[0].train.lr if runs else view_lr
    draw_chart(acc_slot, band_chart(runs, "test_acc", f"Test accuracy ({config.eval_examples:,} images), learning rate {lr:g}{note}", total_steps=config.steps), width="stretch")
    draw_chart(loss_slot, band_chart(runs, "train_loss", f"Training loss, learning rate {lr:g}{note}", total_steps=config.steps), width="stretch")


result = run_experiment("placement", config, live=lambda runs: draw(runs, " (training…)"), label=f"Training {config.total_steps // config.steps} runs")
runs = result.runs_at(view_lr)
draw(runs)
st.caption("Lines: mean over seeds. Band: from the lowest to the highest seed. Training loss is averaged over the steps since the previous point.")

accuracy = result.final_accuracy(view_lr)
diverged = result.diverged(view_lr)
decision = verdict(accuracy, diverged)
with verdict_slot:
    st.subheader(f"Verdict at learning rate {view_lr:g}")
    st.markdown(decision.text)
with metric_slot:
    columns = st.columns(3)
    for column, label in zip(columns, LABELS):
        values = accuracy[label]
        spread = 100 * values.std(ddof=1)
        delta = None
        if label != "no BN":
            versus = paired_difference(label, values, "no BN", accuracy["no BN"])
            sign = "+" if versus.better == label else "−"
            delta = f"{sign}{100 * versus.mean:.1f} points vs no BN"
        column.metric(f"{label}: final test accuracy", f"{format_percent(values.mean())} ± {spread:.1f} points", delta=delta, help=f"Mean ± standard deviation over {len(values)} seeds, full 10,000-image test set.")

for label in LABELS:
    count = int(diverged[label].sum())
    if count:
        step = min(r.diverged_step for r in result.runs_at(view_lr, label) if r.diverged)
        st.warning(
            f"**{label} diverged** in {count} of {len(diverged[label])} seeds at learning rate {view_lr:g} (first at step {step}): "
            "its loss became NaN or infinite, so its curve stops there and it counts with the accuracy its last weights give. "
            "The learning rate is too large for it."
        )


@section("lr_sweep")
def learning_rate_sweep():
    st.subheader("Which placement tolerates larger learning rates?")
    draw_chart(st, sweep_chart(result), width="stretch")
    sweep = sweep_records(result)
    largest = max(lrs)
    at_largest = sweep[sweep["lr"] == largest].set_index("model")
    best = sweep.loc[sweep.groupby("model")["mean"].idxmax()].set_index("model")
    best_text = "; ".join(f"{label} at {best.loc[label, 'lr']:g} ({format_percent(best.loc[label, 'mean'])})" for label in LABELS)
    largest_text = ", ".join(
        f"{label} {format_percent(at_largest.loc[label, 'mean'])}" + (f" ({int(at_largest.loc[label, 'diverged'])} of {seeds} seeds diverged)" if at_largest.loc[label, "diverged"] else "")
        for label in LABELS
    )
    st.markdown(f"Best mean accuracy per model: {best_text}. At the largest learning rate tried, **{largest:g}**: {largest_text}.")
    if len(lrs) > 1 and largest != view_lr:
        st.markdown(f"At {largest:g}, the verdict reads: {result.verdict(largest).text}")
    st.caption("Points: mean over seeds (a cross where some seed diverged). Vertical bars: lowest to highest seed.")
    downloads("placement", config, {"Learning-rate sweep": sweep}, title="Download this section's data and config")


learning_rate_sweep()


@section("inputs")
def nonlinearity_inputs():
    st.subheader("Why they differ: what enters the nonlinearity")
    flat_word = FLAT_WORDS[activation]
    st.markdown(
        f"The {act_name}'s slope decides how much gradient passes back. Where the slope is under "
        f"{FLAT_SLOPE_FRACTION:.0%} of its steepest, a unit is **{flat_word}** there. BN before the {act_name} "
        "sets what the nonlinearity receives (mean β, spread γ per unit); BN after it only sets what the "
        "next layer receives. Measured at the end of training in eval mode (BN uses its running averages) "
        f"on the 1,000 test images, at learning rate {view_lr:g}."
    )
    layer_options = list(range(1, depth + 1))
    layer = controls.select("Hidden layer to look into", "layer", layer_options, depth, format_func=lambda v: f"layer {v}")
    draw_chart(st, histogram_chart(result, view_lr, layer - 1, act_name), width="stretch")
    edges = result.histogram_edges
    st.caption(
        f"Faded bins: where the {act_name}'s slope is under {FLAT_SLOPE_FRACTION:.0%} of its steepest. Share of (image, unit) pairs "
        f"per bin, averaged over seeds; values beyond ±{edges[-1]:g} are counted in the end bins."
    )

    flat_col, mean_col = st.columns(2)
    draw_chart(flat_col, layer_chart(result, view_lr, "flat_fraction", f"Share of inputs where the {act_name} is {flat_word}", "share of (image, unit) pairs", percent=True), width="stretch")
    draw_chart(mean_col, layer_chart(result, view_lr, "output_mean", "Mean of what the next layer receives", "mean of the layer's output"), width="stretch")

    flat = {label: values.mean() for label, values in result.layer_statistic(view_lr, "flat_fraction").items()}
    dead = {label: values.mean() for label, values in result.layer_statistic(view_lr, "dead_fraction").items()}
    output_mean = {label: values.mean() for label, values in result.layer_statistic(view_lr, "output_mean").items()}
    st.markdown(
        f"Averaged over layers and seeds, the {act_name} is {flat_word} on "
        + ", ".join(f"**{format_percent(flat[label])}** of its inputs {('without BN' if label == 'no BN' else 'with ' + label)}" for label in LABELS)
        + ". Units "
        + f"{flat_word} on every test image: "
        + ", ".join(f"{format_percent(dead[label])} ({label})" for label in LABELS)
        + "."
    )
    st.markdown(
        f"What leaves a layer has mean **{output_mean['BN before']:+.3g}** with BN before: the {act_name} comes after the "
        f"normalisation, so its output is no longer centred. With BN after, what leaves the layer is BN's output: mean "
        f"**{output_mean['BN after']:+.3g}**. In eval mode BN standardises with its running averages, so this sits near the "
        f"learned β only while those averages match what the layer now produces. Without BN: **{output_mean['no BN']:+.3g}**."
    )
    downloads("placement", config, {"Flat share per layer": layer_records(result, view_lr, "flat_fraction")}, title="Download this section's data and config")


nonlinearity_inputs()

if result.init_max_difference == 0.0 and result.same_batches:
    st.caption(
        f"Checked for all {len(result.runs) // 3} (learning rate, seed) pairs: the three models started from identical "
        "linear weights and biases and drew the same batches, so each seed's comparison is paired. "
        "PyTorch semantics: BatchNorm1d, momentum 0.1 for the running averages, eps 1e-5; with BN before, the linear bias is "
        "redundant (β replaces it) but is kept so the three models start alike."
    )
else:
    st.error(f"The three models of a seed did not start alike (largest weight difference {result.init_max_difference:.3g}, same batches: {result.same_batches}); the paired comparison is not valid.")

downloads(
    "placement",
    config,
    {
        "Test accuracy over seeds": band_records(runs, "test_acc"),
        "Training loss over seeds": band_records(runs, "train_loss"),
    },
)
source_expander(paired_difference, verdict, NonlinearityInputs)
device_caption()
