"""Train vs eval statistics: what BN normalises with in each mode, and what that does to one input."""
import numpy as np
import streamlit as st

from bnviz.app import chart_mark, Controls, device_caption, downloads, draw_chart, format_percent, page_config, preset_links, run_experiment, section, source_expander
from bnviz.formatting import format_points
from bnviz.bn_stats import precise_batch_norm_statistics
from bnviz.charts.train_vs_eval import (
    accuracy_chart,
    accuracy_records,
    batch_mates_chart,
    batch_mates_records,
    regularization_chart,
    statistics_chart,
    statistics_takeaway,
    statistics_records,
)
from bnviz.experiments.batch_noise_regularization import RegularizationConfig, trend_verdict
from bnviz.experiments.train_vs_eval import TrainVsEvalConfig, accuracy_three_ways, estimate_errors
from bnviz.norms import keras_to_pytorch_momentum, update_running_stats

st.title("Train vs eval: which statistics does BN use?")
preset_links("train_vs_eval")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "In **training**, BN normalises each neuron with the mean and variance of the current mini-batch. "
    "In **evaluation** it cannot: at deployment there may be a single input (a robot's camera frame), and a "
    "prediction must not depend on which other inputs happen to share its batch. So during training BN also "
    "keeps **running estimates** of the population mean and variance, and uses those in eval mode. "
    "Below, the paper's MNIST network (3 × 100 sigmoid units, BN before each nonlinearity) is trained, and "
    "one first-layer neuron's statistics are followed at every step."
)

defaults = TrainVsEvalConfig()
controls = Controls("traineval")
MOMENTA = [0.01, 0.03, 0.1, 0.3, 0.6]


def points(fraction: float) -> str:
    """An accuracy difference in signed points, without a "-0.0"."""
    return f"{(round(100 * fraction, 1) or 0.0):+.1f}"


def momentum_label(momentum: float) -> str:
    return f"{momentum:g} (Keras/TF: {1 - momentum:g})"


with st.expander("Settings of the training run", expanded=True):
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        momentum = controls.select("BN momentum, PyTorch convention", "mom", MOMENTA, defaults.bn_momentum, format_func=momentum_label,
                                   help="PyTorch: running = (1 − m)·running + m·batch. Keras/TensorFlow write the same update with 1 − m.")
    with c2:
        batch_size = controls.select("Batch size", "bs", [8, 16, 32, 60, 128, 256], defaults.batch_size)
    with c3:
        lr = controls.select("Learning rate (SGD)", "lr", [0.05, 0.1, 0.2, 0.5, 1.0, 2.0], defaults.lr, slider=True)
    with c4:
        steps = controls.slider("Training steps", "steps", 100, 3000, defaults.steps, step=100)
controls_display = st.columns(2)
with controls_display[0]:
    image_index = controls.slider("Test image for the batch-mates experiment", "img", 0, 99, defaults.image_index)
controls.show_notes()
config = defaults.replace(bn_momentum=momentum, batch_size=batch_size, lr=lr, steps=steps, image_index=image_index)

# two lines: on one, the Keras half ran out of a laptop-width page
st.latex(r"\begin{aligned} \text{PyTorch: } & \hat\mu \leftarrow (1-m)\,\hat\mu + m\,\mu_B \\ \text{Keras/TF: } & \hat\mu \leftarrow m_K\,\hat\mu + (1-m_K)\,\mu_B, \quad m_K = 1 - m \end{aligned}")
st.caption(
    f"The same update, two ways of writing it: PyTorch momentum {momentum:g} is Keras momentum "
    f"{1 - momentum:g} (Keras's default 0.99 is PyTorch's {keras_to_pytorch_momentum(0.99):g}). The running variance is "
    "updated with the batch's *unbiased* variance (× m/(m−1)); `momentum=None` in PyTorch means the cumulative average, "
    "every batch weighted 1/(number of batches)."
)

result = run_experiment("train_vs_eval", config, label="Training and probing")
run = result.run
if run.diverged:
    st.error(
        f"The model **diverged** at step {run.diverged_step}: its loss became NaN or infinite, so its statistics are "
        "meaningless. Lower the learning rate."
    )
    st.stop()

# ---------------------------------------------------------------- 1. statistics over training
@section("stats")
def statistics_over_training():
    st.header("1. Batch statistics, running estimates and the truth")
    unit_controls = Controls("traineval")  # its own notes, shown under this section: the neuron is a view of the run
    unit_position = unit_controls.radio("Neuron of the first hidden layer", "unit", list(range(len(defaults.units))), 0, horizontal=True,
                                        format_func=lambda i: f"neuron {defaults.units[i]}")
    unit_controls.show_notes()
    unit = config.units[unit_position]
    left, right = st.columns(2)
    draw_chart(left, statistics_chart(result, unit_position, "mean", f"Mean of neuron {unit}'s BN input"), takeaway=statistics_takeaway(result, unit_position), width="stretch")
    draw_chart(right, statistics_chart(result, unit_position, "var", f"Variance of neuron {unit}'s BN input"), width="stretch")
    m1, m2, m3 = st.columns(3)
    gap = result.mean_gap
    m1.metric("EMA error at the last step, all first-layer neurons", f"{gap['running (EMA)']:.3f} σ", help="EMA error = |running mean − true mean| / true std; here its mean over all 100 first-layer neurons at the last step.")
    m2.metric("Cumulative average's error, same neurons", f"{gap['cumulative average']:.3f} σ", delta=f"{gap['cumulative average'] / gap['running (EMA)']:.1f}× the EMA's", delta_color="off", delta_arrow="off")
    m3.metric("Recalibrated (Algorithm 2) error, same neurons", f"{gap['recalibrated']:.3f} σ", delta=f"{gap['recalibrated'] / gap['running (EMA)']:.1f}× the EMA's", delta_color="off", delta_arrow="off")
    errors = estimate_errors(result, unit_position, "mean")
    worse = "more" if errors["cumulative average"] > errors["running (EMA)"] else "less"
    st.markdown(
        f"The grey dots are what BN really normalised with at each step: one batch of {config.batch_size}, noisy. "
        f"The wide black line is the neuron's true mean over all 60,000 training images **with the weights of that step**: it moves, "
        f"because the weights feeding the neuron move. The EMA (momentum {momentum:g}, about the last {1 / momentum:.0f} batches) "
        f"trails it; the **cumulative** average (PyTorch's `momentum=None`) weights every batch since step 1 equally, stale ones included. "
        f"Over the second half of training, neuron {unit}'s EMA error (|running mean − true mean| in true standard deviations) was "
        f"**{errors['running (EMA)']:.3f}** on average, the cumulative average's **{errors['cumulative average']:.3f}** ({worse} than the EMA's). "
        "The sentence under the chart gives the same neuron's EMA error at the last step."
    )
    st.caption(
        "The true statistics are exact, not sampled: the first layer's BN input is z = Wx + b, so its mean over the training set "
        "is W·E[x] + b and its variance wᵀ·Cov[x]·w, from the 60,000 images' mean and covariance. The running estimates are "
        "PyTorch's buffers (the EMA) and the same update re-run with momentum=None; a test checks both against "
        "`torch.nn.BatchNorm1d` step by step. Variances: the batch's is the biased one BN divides by, the running ones are unbiased."
    )
    downloads("train_vs_eval", config, {f"Neuron {unit} mean over steps": statistics_records(result, unit_position, "mean"),
                                        f"Neuron {unit} variance over steps": statistics_records(result, unit_position, "var")},
              title="Download this section's data and config")


statistics_over_training()

# ---------------------------------------------------------------- 2. batch-mates
@section("mates")
def batch_mates():
    st.header("2. Batch-mates: one image, many batches")
    image_col, chart_col = st.columns([1, 4])
    with image_col:
        st.image(np.kron(result.image, np.ones((6, 6), dtype=np.uint8)), caption=f"test image {config.image_index}, a {result.image_label}")
    with chart_col:
        draw_chart(st, batch_mates_chart(result), width="stretch")
    train_spread, eval_spread, flips = result.train_mode_spread, result.eval_mode_spread, result.train_mode_flip_rate
    sizes = result.probe_batch_sizes
    b1, b2, b3 = st.columns(3)
    b1.metric(f"Train mode: std over batches at B = {sizes[0]}", f"{train_spread[0]:.3f}", help="Standard deviation over the random batches of the image's true-class probability.")
    b2.metric(f"Train mode: std over batches at B = {sizes[-1]}", f"{train_spread[-1]:.3f}", delta=f"{train_spread[-1] / train_spread[0]:.2f}× the B = {sizes[0]} std" if train_spread[0] > 0 else None, delta_color="off", delta_arrow="off")
    b3.metric("Eval mode: largest difference between batches, any B (max − min)", "0 (exactly)" if eval_spread.max() == 0 else f"{eval_spread.max():.2e}")
    shrinks = bool(np.all(np.diff(train_spread) <= 0))
    st.markdown(
        f"In train mode the image's prediction depends on its batch-mates: with B = {sizes[0]} its true-class probability "
        f"varies with a standard deviation of **{train_spread[0]:.3f}** and the predicted digit differs from the eval-mode one in "
        f"**{format_percent(flips[0])}** of batches; with B = {sizes[-1]} the standard deviation is **{train_spread[-1]:.3f}** "
        f"({format_percent(flips[-1])} of batches flip). It {'shrinks at every step' if shrinks else 'mostly shrinks'} as the batch grows, "
        f"because the batch statistics get closer to the population's. In eval mode the largest difference between batches, over "
        f"every batch size, is **{eval_spread.max():g}**: the running estimates are fixed, so batch-mates cannot matter."
    )
    if result.eval_shape_rounding > 0:
        st.caption(
            f"(Between *different* batch sizes, eval-mode logits can differ by float rounding, here at most "
            f"{result.eval_shape_rounding:.1e}: the matrix-multiply kernel sums in a different order for another batch shape. "
            "Not the batch-mates: within one batch size the largest difference is exactly zero.)"
        )
    st.subheader("A single input at deployment (B = 1)")
    alone_left, alone_right = st.columns(2)
    with alone_left:
        st.markdown("**Train mode**, batch of one image:")
        if result.alone_train_error:
            st.error(f"PyTorch refuses it:\n\n`ValueError: {result.alone_train_error}`")
            st.caption("One value per neuron has no variance: normalising it would give 0/0 (every output equal to β).")
        else:
            st.info("PyTorch accepted a batch of one in train mode.")
    with alone_right:
        predicted = int(np.argmax(result.alone_eval_probs))
        st.markdown("**Eval mode**, batch of one image:")
        st.success(f"predicts **{predicted}** with probability {result.alone_eval_probs[predicted]:.3f} (true digit: {result.image_label}), "
                   "the same as inside any batch.")
    downloads("train_vs_eval", config, {"Batch-mates probabilities": batch_mates_records(result)}, title="Download this section's data and config")


batch_mates()

# ---------------------------------------------------------------- 3. accuracy three ways
@section("accuracy")
def accuracy_three_ways_section():
    st.header("3. Test accuracy three ways, same weights")
    rows = accuracy_three_ways(result)
    draw_chart(st, accuracy_chart(rows), width="stretch")
    best_way, best_accuracy = max(rows, key=lambda row: row[1])
    eval_acc, recal_acc = result.eval_accuracy, result.recalibrated_accuracy
    difference = (recal_acc - eval_acc) * 100
    st.markdown(
        f"Best: **{best_way}**, {format_percent(best_accuracy)}. Recalibrating the population statistics (Algorithm 2: "
        f"{config.recalibration_batches} training batches of {config.batch_size} with frozen weights, averaged, variance × "
        f"m/(m−1) = {config.batch_size}/{config.batch_size - 1}) gives {format_percent(recal_acc)}, "
        f"{abs(difference):.2f} points {'above' if difference > 0 else 'below' if difference < 0 else 'level with'} the running estimates "
        f"({format_percent(eval_acc)}). Normalising each test batch with its own statistics costs accuracy when batches are small: "
        f"{format_percent(result.train_mode_accuracy[0])} with batches of {result.train_mode_batch_sizes[0]}, "
        f"{format_percent(result.train_mode_accuracy[-1])} with {result.train_mode_batch_sizes[-1]}."
    )
    st.latex(r"\text{Algorithm 2: } \mathrm{E}[x] = \mathrm{E}_{\mathcal B}[\mu_{\mathcal B}], \qquad \mathrm{Var}[x] = \frac{m}{m-1}\,\mathrm{E}_{\mathcal B}[\sigma^2_{\mathcal B}]")
    st.caption("Try a small momentum (Keras 0.99 = PyTorch 0.01) with few steps: the EMA still remembers early weights, and recalibration pays off.")
    downloads("train_vs_eval", config, {"Accuracy three ways": accuracy_records(rows)}, title="Download this section's data and config")


accuracy_three_ways_section()

# ---------------------------------------------------------------- 4. regularization side effect
@section("regularization")
def batch_noise_regularization():
    st.header("4. The side effect: batch noise as a regularizer")
    st.markdown(
        "Because each example is normalised with its batch's statistics, its hidden values carry noise from its batch-mates "
        "(section 2). The article: this acts as a regularizer, *“greater batch size, lesser regularization”*. Measured below: "
        "the gap between training and test accuracy of small ReLU MLPs trained on a small training subset, with and without BN, "
        "at several batch sizes, same steps and learning rate, several seeds."
    )
    reg_defaults = RegularizationConfig()
    reg_controls = Controls("traineval")  # its own notes, shown under this section
    r1, r2, r3, r4 = st.columns(4)
    with r1:
        reg_examples = reg_controls.select("Training images", "regn", [500, 1000, 2000, 5000], reg_defaults.train_examples)
    with r2:
        reg_steps = reg_controls.slider("Steps per run", "regsteps", 100, 2000, reg_defaults.steps, step=100)
    with r3:
        reg_seeds = reg_controls.slider("Seeds", "seeds", 1, 5, reg_defaults.num_seeds)
    with r4:
        reg_metric = reg_controls.radio("Show", "regshow", ["gap", "test_acc", "train_acc", "test_loss"], "gap",
                                    format_func={"gap": "train − test gap", "test_acc": "test accuracy", "train_acc": "train accuracy", "test_loss": "test loss"}.get)
    reg_config = page_config(reg_defaults, train_examples=reg_examples, steps=reg_steps, num_seeds=reg_seeds)
    total_runs = len(reg_config.runs())
    run_regularization = reg_controls.toggle(f"Run it ({total_runs} trainings)", "reg", False)
    reg_controls.show_notes()
    if run_regularization:
        reg = run_experiment("batch_noise_regularization", reg_config, label="Training the regularization runs")
        draw_chart(st, regularization_chart(reg, reg_metric), width="stretch")
        for name in reg.diverged:
            st.warning(f"The run “{name}” diverged (loss NaN or infinite); its accuracies are those of a broken model.")
        effect = reg.bn_effect().groupby("batch_size")["bn_effect"].agg(["mean", "min", "max"])
        mean_gap = reg.mean_gap().set_index(["model", "batch_size"])
        cols = st.columns(len(effect))
        for col, (size, row) in zip(cols, effect.iterrows()):
            col.metric(f"BN narrows the gap at B = {size} by", f"{points(row['mean'])} pts",
                       delta=f"seeds: {points(row['min'])} to {points(row['max'])}", delta_color="off", delta_arrow="off",
                       help="No-BN gap minus BN gap, in accuracy points; positive means BN generalised better.")
        smallest, largest = effect.index[0], effect.index[-1]
        trend = trend_verdict(reg)
        trend_words = {
            "supported": "**larger with the smaller batch, as the article says**",
            "not supported": "**not larger with the smaller batch**" + (", the opposite of the article's remark" if trend.reversed else ""),
        }.get(trend.word, f"**{trend.label}** on whether it is larger with the smaller batch")
        st.markdown(
            f"Measured: BN's gap is {100 * mean_gap.loc[('BN', smallest), 'mean']:.1f} points at B = {smallest} and "
            f"{100 * mean_gap.loc[('BN', largest), 'mean']:.1f} at B = {largest}; without BN {100 * mean_gap.loc[('no BN', smallest), 'mean']:.1f} "
            f"and {100 * mean_gap.loc[('no BN', largest), 'mean']:.1f}. BN's own effect on the gap (no BN minus BN) is "
            f"{points(effect.loc[smallest, 'mean'])} points at B = {smallest} and {points(effect.loc[largest, 'mean'])} at B = {largest}: "
            + trend_words
            + f" (B = {smallest} minus B = {largest}, {trend.reason})."
            + " Note the gap also grows with the batch size for both models: bigger batches mean more epochs over the same small subset in the same number of steps."
        )
    else:
        st.caption(f"Switch it on to train {total_runs} small models ({reg_seeds} seeds × {len(reg_config.batch_sizes)} batch sizes × with and without BN); then cached.")
    if run_regularization:
        downloads("batch_noise_regularization", reg_config, {"Regularization runs": reg.table}, title="Download this section's data and config")


batch_noise_regularization()

# ---------------------------------------------------------------- 5. PreciseBN (issue 14)
import pandas as pd  # noqa: E402

from bnviz.charts.precise_bn import precise_chart, precise_frame  # noqa: E402
from bnviz.experiments.precise_bn import PreciseBNConfig, lag_verdict, precise_model  # noqa: E402


@section("precise")
def precise_bn():
    precise_mark = chart_mark()
    st.header("5. PreciseBN: the population statistics, recomputed")
    st.markdown(
        "Section 3 recomputed the statistics once. Wu & Johnson 2021 (*Rethinking “Batch” in BatchNorm*) make it a method, **PreciseBN**: "
        "after training, freeze the weights, run N training images through the network in train mode (batches of the training size) and "
        "aggregate the batch statistics exactly. The EMA instead averages statistics computed by *older* weights: with momentum m it remembers "
        "about the last 1/m steps, so when a high learning rate moves the weights fast, it **lags**. Below, the same network is trained at a low "
        "and a high learning rate, then evaluated with its EMA and with PreciseBN from 10² to 10⁴ images."
    )
    st.latex(r"\mu = \frac1K \sum_{k=1}^{K} \mu_{\mathcal B_k}, \qquad \sigma^2 = \frac1K \sum_{k=1}^{K} \left(\sigma^2_{\mathcal B_k} + \mu^2_{\mathcal B_k}\right) - \mu^2")
    st.caption("K batches of m images: the exact mean and (biased) variance of all N = K·m inputs each BN layer saw, the earlier layers normalising with their batch statistics.")
    pb_defaults = PreciseBNConfig()
    pb_controls = Controls("traineval")  # its own notes, shown under this section
    p1, p2, p3, p4 = st.columns(4)
    with p1:
        pb_high = pb_controls.select("High learning rate", "pblr", [1.0, 2.0, 5.0, 10.0, 20.0], pb_defaults.learning_rates[-1], slider=True,
                                     help=f"Compared with lr {pb_defaults.learning_rates[0]:g}; plain SGD, batches of {pb_defaults.batch_size}.")
    with p2:
        pb_momentum = pb_controls.select("BN momentum", "pbmom", [0.01, 0.03, 0.1, 0.3], pb_defaults.bn_momentum, format_func=momentum_label,
                                         help="PyTorch's convention. 0.01 is Keras/TensorFlow's default 0.99: an EMA over ~100 steps.")
    with p3:
        pb_draws = pb_controls.slider("Random draws of the N images", "pbdraws", 1, 5, pb_defaults.draws, help="The band spans the worst and the best draw.")
    with p4:
        pb_steps = pb_controls.slider("Training steps", "pbsteps", 100, 2000, pb_defaults.steps, step=100)
    pb_config = page_config(pb_defaults, learning_rates=(pb_defaults.learning_rates[0], pb_high), bn_momentum=pb_momentum, draws=pb_draws, steps=pb_steps)
    run_precise = pb_controls.toggle(f"Run this experiment (trains {len(pb_config.learning_rates) * pb_config.seeds} models, {len(pb_config.learning_rates)} learning rates × {pb_config.seeds} seeds, for {pb_steps} steps, then "
                                     f"{(len(pb_config.sample_counts) + pb_config.seeds - 1) * pb_draws * len(pb_config.learning_rates)} PreciseBN estimates; then cached)", "pbrun", False)
    pb_controls.show_notes()
    if not run_precise:
        st.caption("Switch it on to train the two models and measure PreciseBN against the EMA.")
    else:
        pb = run_experiment("precise_bn", pb_config, label="PreciseBN vs the EMA")
        finite = [v for i in range(len(pb_config.learning_rates)) if not pb.diverged(i) for v in [*pb.precise_accuracy[i].ravel(), pb.ema_accuracy[i]]]
        low, high = (min(finite), max(finite)) if finite else (0.0, 1.0)
        margin = max(0.002, 0.1 * (high - low))
        y_domain = [max(0.0, low - margin), min(1.0, high + margin)]
        chart_columns = st.columns(len(pb_config.learning_rates))
        sentences = []
        for i, (column, pb_lr) in enumerate(zip(chart_columns, pb_config.learning_rates)):
            if pb.diverged(i):
                column.error(f"Learning rate {pb_lr:g} **diverged** at step {pb.runs[i].diverged_step} (loss NaN or infinite): no statistics to compare. Pick a lower high learning rate.")
                continue
            draw_chart(column, precise_chart(pb, i, y_domain), width="stretch")
            means = pb.precise_accuracy[i].mean(axis=1)
            lag = pb.lag(i)
            column.metric(f"PreciseBN − EMA at lr {pb_lr:g}", format_points(lag),
                          help=f"PreciseBN from {int(pb.samples_used[-1]):,} images (mean over draws) minus the EMA's test accuracy (10,000 test images).")
            enough = next((int(n) for n, m in zip(pb.samples_used, means) if m >= pb.ema_accuracy[i]), None)
            sentences.append(
                f"At lr **{pb_lr:g}** the EMA gives **{format_percent(pb.ema_accuracy[i])}**, PreciseBN from {int(pb.samples_used[-1]):,} images "
                f"**{format_percent(means[-1])}** ({format_points(lag)}); "
                + (f"PreciseBN matches the EMA from **{enough:,}** images on." if enough is not None else "PreciseBN never reaches the EMA here.")
            )
        st.markdown(" ".join(sentences))
        if len(sentences) == 2 and not any(pb.diverged(i) for i in range(2)):
            lags = [pb.lag(0), pb.lag(1)]
            lag_judged = lag_verdict(pb)
            st.markdown(
                f"The EMA's shortfall is **{100 * lags[1]:.2f}** points at the high learning rate against **{100 * lags[0]:.2f}** at the low one (seed {pb_config.seed}). "
                + {
                    "supported": "Over the seeds, the EMA lags more when the weights move fast, as Wu & Johnson describe: ",
                    "not supported": "Over the seeds, the EMA does **not** lag more at the high learning rate here (try a smaller momentum or a higher learning rate): ",
                }.get(lag_judged.word, f"Whether the EMA lags more at the high learning rate, as Wu & Johnson describe, is **{lag_judged.label}**: ")
                + f"high minus low learning rate, {lag_judged.reason}"
            )
        remaining = (1 - pb_momentum) ** pb_steps
        if remaining > 0.01:
            st.markdown(
                f"Caution: after {pb_steps} steps with momentum {pb_momentum:g}, the EMA still carries (1 − m)^steps = **{remaining:.0%}** of its initial "
                "values (mean 0, variance 1) at both learning rates, so its shortfall here is mostly that warm-up, not the lag: train longer to see the lag alone."
            )
        gap = pd.DataFrame(pb.stat_gap)
        if len(gap):
            shown = gap.assign(learning_rate=gap["learning_rate"].map("{:g}".format)).rename(columns={"learning_rate": "learning rate", "layer": "BN layer", "mean_gap": "|μ_EMA − μ| / σ", "var_gap": "|σ²_EMA / σ² − 1|"})
            st.caption(f"Distance between the EMA and PreciseBN's statistics (from {int(pb.samples_used[-1]):,} images), mean over each layer's {', '.join(map(str, sorted(set(pb_config.hidden))))} units:")
            st.table(shown.set_index(["learning rate", "BN layer"]).style.format("{:.3f}"))
        st.caption(
            f"Each point: the trained weights frozen, {', '.join(f'{int(n):,}' for n in pb.samples_used)} training images (whole batches of {pb_config.batch_size}) "
            f"through the network in train mode, statistics aggregated as above, test accuracy on all 10,000 test images; {pb_draws} random draw{'s' if pb_draws > 1 else ''} "
            "of the images (band: worst to best). PyTorch's EMA stores the unbiased batch variance; PreciseBN's pooled variance is the biased one over all N inputs."
        )
        frames = [precise_frame(pb, i).assign(learning_rate=pb_lr) for i, pb_lr in enumerate(pb_config.learning_rates) if not pb.diverged(i)]
        downloads("precise_bn", pb_config, {"PreciseBN vs EMA accuracy": pd.concat(frames) if frames else pd.DataFrame(), "EMA vs precise statistics": gap},
                  title="Download the PreciseBN data and config", charts=(precise_mark, None))
        source_expander(precise_model, precise_batch_norm_statistics, title="The code of PreciseBN")


precise_bn()

source_expander(update_running_stats, precise_batch_norm_statistics)
device_caption()
