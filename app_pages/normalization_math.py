"""Normalization math: eq. (1)-(4) stepped through on a live batch, gamma and beta, the backward pass."""
import math

import pandas as pd
import streamlit as st
import torch

from bnviz import norms
from bnviz.app import Controls, device_caption, draw_chart, downloads, format_percent, preset_links, run_experiment, section, source_expander, training_stepper
from bnviz.charts.normalization_math import (
    STEPS,
    all_neurons_chart,
    all_neurons_records,
    gradient_chart,
    gradient_records,
    gradient_takeaway,
    neurons_chart,
    neurons_records,
    nonlinearity_chart,
    nonlinearity_takeaway,
    step_histogram,
)
from bnviz.experiments.normalization_math import (
    NONLINEARITIES,
    NUM_SHOWN,
    NormalizationMathConfig,
    analyse,
)
from bnviz.models import PAPER_HIDDEN, ModelConfig
from bnviz.train import TrainConfig

TOLERANCE = 1e-6  # bnviz must equal torch to this, in float64


def number(value: float, digits: int = 4) -> str:
    """A value for the text: NaN and inf spelled out, tiny values in scientific notation."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "∞" if value > 0 else "−∞"
    return f"{value:.{digits}g}"


def latex_number(value: float, digits: int = 4) -> str:
    text = number(value, digits)
    if "e" in text:
        mantissa, exponent = text.split("e")
        return f"{mantissa}\\times 10^{{{int(exponent)}}}"
    return {"NaN": "\\text{NaN}", "∞": "\\infty", "−∞": "-\\infty"}.get(text, text)


def latex_term(value: float, digits: int = 4) -> str:
    """A number as an operand: negatives in parentheses, so "2 + (−7)" never reads "2 + −7"."""
    text = latex_number(value, digits)
    return f"({text})" if value < 0 else text


def readable(table: pd.DataFrame) -> pd.DataFrame:
    """Numbers as text of 4 significant digits (tiny ones in scientific notation), so a
    table never shows 0.00000000000000004, and NaN and ∞ read as themselves, not as empty cells."""
    return table.map(lambda v: v if isinstance(v, (str, int)) else number(float(v)))


st.title("Normalization math")
preset_links("normalization_math")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "Batch Normalization, for each neuron, computes the batch **mean** (1) and **variance** (2), "
    "**normalises** (3) with a small ε, then **scales and shifts** with two trained numbers γ and β (4). "
    "Here every step runs on a real batch, and bnviz's step-by-step code is checked against PyTorch on that same batch."
)

defaults = NormalizationMathConfig()
# in the page, as every page's settings (on a phone the sidebar is folded away)
batch_settings, bn_settings = st.expander("Settings of the batch and of BN", expanded=False).columns(2)
controls = Controls("math", container=batch_settings)
batch_settings.subheader("The batch")
source = controls.radio(
    "Values", "source", ["mnist", "synthetic"], defaults.source,
    format_func={"mnist": "MNIST activations", "synthetic": "synthetic batch"}.get,
    help="MNIST: the sigmoid inputs of one hidden layer of the paper's MLP (trained without BN). Synthetic: values you shape.",
)
changes = {"source": source}
if source == "mnist":
    changes["layer"] = controls.select("Hidden layer", "layer", list(range(1, len(PAPER_HIDDEN) + 1)), defaults.layer)
    changes["train_steps"] = controls.select("MLP trained for (Adam steps, batch 60)", "trained", [0, 100, 300, 1000], defaults.train_steps, slider=True)
else:
    changes["mean"] = controls.slider("Mean", "mean", -10.0, 10.0, defaults.mean, step=0.5)
    changes["spread"] = controls.select("Spread (standard deviation)", "spread", [0.01, 0.1, 0.5, 1.0, 3.0, 10.0, 30.0], defaults.spread, slider=True)
    changes["skew"] = controls.slider("Skew (skew-normal shape)", "skew", -10.0, 10.0, defaults.skew, step=1.0)
    changes["outliers"] = controls.slider("Outliers (fraction at ±10 spreads)", "outliers", 0.0, 0.2, defaults.outliers, step=0.01)
    changes["constant_neuron"] = controls.toggle("Make the first shown neuron constant", "constant", defaults.constant_neuron)
changes["batch_size"] = controls.select("Batch size", "batch", [2, 4, 8, 16, 32, 60, 128, 256, 512], defaults.batch_size, slider=True)
changes["batch_seed"] = controls.slider("Which batch (seed)", "draw", 0, 9, defaults.batch_seed)
width = defaults.replace(source=source).width
changes["first_neuron"] = controls.slider(f"Neurons shown: this one and the next {NUM_SHOWN - 1}", "neuron", 0, width - NUM_SHOWN, defaults.first_neuron)
bn_settings.subheader("BN's settings")
controls.container = bn_settings
changes["eps"] = controls.select("ε", "eps", [0.0, 1e-8, 1e-5, 1e-3, 1e-1, 1.0], defaults.eps, slider=True, format_func=lambda v: f"{v:g}")
changes["gamma"] = controls.slider("γ (scale)", "gamma", 0.0, 5.0, defaults.gamma, step=0.1)
changes["beta"] = controls.slider("β (shift)", "beta", -5.0, 5.0, defaults.beta, step=0.1)
changes["momentum"] = controls.select(
    "Momentum (PyTorch meaning)", "momentum", [0.01, 0.1, 0.5, 1.0, None], defaults.momentum,
    format_func=lambda v: "None (cumulative average)" if v is None else f"{v:g}",
)
nonlinearity = controls.radio("Nonlinearity drawn", "nonlin", list(NONLINEARITIES), "sigmoid", horizontal=True)
controls.show_notes()
config = defaults.replace(**changes)
result = run_experiment("normalization_math", config, label="Preparing the batch")
neurons = [int(n) for n in result.neurons]
focus = neurons[0]
m = result.batch_size
n_all = result.all_mean.shape[0]  # every neuron of the batch (sections read it)

# ------------------------------------------------------------------ the batch
st.markdown(f"**The batch:** {result.description}.")
c1, c2, c3, c4 = st.columns(4)
c1.metric("Values per neuron (m)", f"{m}")
c2.metric("Neurons shown", ", ".join(map(str, neurons)), delta=f"of {result.all_mean.shape[0]}", delta_color="off", delta_arrow="off")
if result.model_test_acc is not None:
    c3.metric("The MLP's test accuracy", format_percent(result.model_test_acc), delta="2,000 test images", delta_color="off", delta_arrow="off")
worst = max(result.checks.values()) if result.checks else math.nan
if result.torch_refusal:
    c4.metric("bnviz vs torch", "torch refused", delta="see below", delta_color="off", delta_arrow="off")
else:
    c4.metric("bnviz vs torch, largest difference", number(worst, 2), delta="equal within 1e-6" if worst <= TOLERANCE else "NOT within 1e-6", delta_color="normal" if worst <= TOLERANCE else "inverse")

if result.diverged:
    st.error(
        f"**NaN:** neuron {focus}'s batch variance is {number(float(result.var[0]))} and ε = {config.eps:g}, so eq. (3) divides "
        f"{number(float(abs(result.centred[:, 0]).max()))} by √({number(float(result.var[0]))} + {config.eps:g}) = 0: 0/0 is NaN, and the NaN "
        "flows into y and every gradient. This is exactly what ε is for: choose ε > 0 in the settings above."
    )

# ------------------------------------------------------------------ eq. (1)-(4)
@section("steps")
def step_by_step():
    st.header("Step by step, on neuron " + str(focus))
    first = result.x[: min(3, m), 0]
    preview = " + ".join(latex_term(float(v), 3) for v in first) + (" + \\dots" if m > 3 else "")
    st.latex(r"(1)\quad \mu_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} x_i")
    st.latex(rf"\mu = \frac{{1}}{{{m}}}\left({preview}\right) = {latex_number(float(result.mean[0]))}")
    st.latex(r"(2)\quad \sigma^2_\mathcal{B} = \frac{1}{m}\sum_{i=1}^{m} (x_i - \mu_\mathcal{B})^2")
    st.latex(rf"\sigma^2 = {latex_number(float(result.var[0]))} \qquad \text{{(biased: divided by }} m = {m}\text{{)}}")
    st.latex(r"(3)\quad \hat{x}_i = \frac{x_i - \mu_\mathcal{B}}{\sqrt{\sigma^2_\mathcal{B} + \epsilon}}")
    st.latex(
        rf"\hat{{x}}_1 = \frac{{{latex_number(float(result.x[0, 0]))} - {latex_term(float(result.mean[0]))}}}"
        rf"{{\sqrt{{{latex_number(float(result.var[0]))} + {latex_number(config.eps)}}}}} = {latex_number(float(result.x_hat[0, 0]))}"
        rf"\qquad \frac{{1}}{{\sqrt{{\sigma^2+\epsilon}}}} = {latex_number(float(result.inv_std[0]))}"
    )
    st.latex(r"(4)\quad y_i = \gamma\,\hat{x}_i + \beta")
    st.latex(rf"y_1 = {latex_number(config.gamma)} \times {latex_term(float(result.x_hat[0, 0]))} + {latex_term(config.beta)} = {latex_number(float(result.y[0, 0]))}")

    columns = st.columns(len(STEPS))
    for column, step in zip(columns, STEPS):
        draw_chart(column, step_histogram(result, step), width="stretch")
    st.caption(f"Neuron {focus}'s {m} values at each step (density). Dashed: the standard normal N(0, 1), the target of eq. (3).")

    table = pd.DataFrame(
        {
            "neuron": neurons,
            "μ  (1)": result.mean,
            "σ²  (2)": result.var,
            "1/√(σ²+ε)": result.inv_std,
            "mean of x̂": result.x_hat.mean(axis=0),
            "variance of x̂": result.x_hat.var(axis=0),
            "mean of y": result.y.mean(axis=0),
            "std of y": result.y.std(axis=0),
        }
    )
    st.dataframe(readable(table), hide_index=True, width="stretch")

    finite_means = result.all_x_hat_mean[~pd.isna(result.all_x_hat_mean)]
    finite_vars = result.all_x_hat_var[~pd.isna(result.all_x_hat_var)]
    nan_neurons = n_all - len(finite_vars)
    over = f"all {n_all} neurons" if not nan_neurons else f"the {n_all - nan_neurons} finite neurons"
    a1, a2, a3 = st.columns(3)
    a1.metric("After (3): largest |mean|", number(float(abs(finite_means).max()), 2) if len(finite_means) else "NaN", delta=f"over {over}", delta_color="off", delta_arrow="off")
    a2.metric("After (3): variance, min … max", f"{number(float(finite_vars.min()), 6)} … {number(float(finite_vars.max()), 6)}" if len(finite_vars) else "NaN", delta=f"over {over}", delta_color="off", delta_arrow="off")
    a3.metric("Before, batch means span", f"{number(float(result.all_mean.min()), 3)} … {number(float(result.all_mean.max()), 3)}")
    st.caption(
        "The variance of x̂ is σ²/(σ²+ε), a hair below 1: ε is added inside the square root. "
        f"With ε = {config.eps:g}, the neuron with the smallest batch variance ({number(float(result.all_var.min()))}) "
        f"ends at variance {number(float(result.all_x_hat_var[result.all_var.argmin()]), 6)}."
    )

    left, right = st.columns(2)
    draw_chart(left, neurons_chart(result, "x", f"Before BN: neurons {', '.join(map(str, neurons))}"), width="stretch")
    draw_chart(right, neurons_chart(result, "y", f"After BN (γ = {config.gamma:g}, β = {config.beta:g})"), width="stretch")
    draw_chart(st, all_neurons_chart(result), width="stretch")


step_by_step()

# ------------------------------------------------------------------ gamma, beta and the nonlinearity
@section("regimes")
def regimes_section():
    st.header("γ and β choose the regime of the nonlinearity")
    st.markdown(
        "After (3) every neuron sits around 0 with spread 1. γ stretches that and β moves it, so the layer itself can choose "
        "whether its values stay in the nonlinearity's nearly **linear** middle, bend into its **curve**, or reach the flat, "
        "**saturated** ends (ReLU: the **dead** side, slope 0), where gradients vanish."
    )
    draw_chart(st, nonlinearity_chart(result, nonlinearity), takeaway=nonlinearity_takeaway(result, nonlinearity), width="stretch")
    fractions = result.regimes[nonlinearity]
    for column, (regime, share) in zip(st.columns(len(fractions)), fractions.items()):
        column.metric(f"{regime} ({nonlinearity})", format_percent(share))
    bounds = result.regime_bounds[nonlinearity]
    if nonlinearity == "relu":
        st.caption("ReLU: slope 1 for y > 0 (linear), 0 for y ≤ 0 (dead). Shares are over all "
                   f"{result.all_y.size:,} output values of the batch.")
    else:
        st.caption(
            f"{nonlinearity}: linear for |y| ≤ {bounds['linear']:.3g}, saturated for |y| ≥ {bounds['saturated']:.3g} "
            f"(from its slope). Shares are over all {result.all_y.size:,} output values of the batch."
        )


regimes_section()

# ------------------------------------------------------------------ eps
@section("epsilon")
def eps_section():
    st.header("ε: what guards the division")
    # as text, so NaN (0/0) and ∞ read as themselves rather than as empty cells
    # short headers, so the seven columns fit a laptop screen (long ones pushed the last out of view)
    EPS_HEADERS = {"batch size": "m", "batch variance": "σ²", "amplification (ε)": "1/√(σ²+ε)", "amplification (ε = 0)": "1/√σ²", "max |x̂| (ε)": "max |x̂|", "max |x̂| (ε = 0)": "max |x̂|, ε = 0"}
    eps_table = readable(pd.DataFrame(result.eps_cases)).rename(columns=EPS_HEADERS)
    st.dataframe(eps_table, hide_index=True, width="stretch")
    st.caption(f"m: values per neuron; σ²: their batch variance; 1/√(σ²+ε) with this page's ε = {config.eps:g}, 1/√σ² without ε; the largest |x̂| with and without ε.")
    constant, almost, pair = result.eps_cases[3], result.eps_cases[2], result.eps_cases[1]
    st.markdown(
        f"The amplification 1/√(σ²+ε) multiplies every deviation from the mean. A **constant neuron** has batch variance "
        f"{number(constant['batch variance'])}: with ε = {config.eps:g} its amplification is {number(constant['amplification (ε)'])}, "
        f"without ε it is {number(constant['amplification (ε = 0)'])} and x̂ reaches {number(constant['max |x̂| (ε = 0)'])}"
        + (" (0/0)." if constant["batch variance"] == 0 else " (rounding error blown up to a full unit).")
        + f" An **almost constant** one (noise 0.001) is amplified {number(almost['amplification (ε = 0)'])}× without ε and "
        f"{number(almost['amplification (ε)'])}× with it. A **batch of 2** always normalises to ±1 without ε "
        f"(here {number(pair['max |x̂| (ε = 0)'])}): each value is exactly one (biased) standard deviation from the mean of two."
    )


eps_section()

# ------------------------------------------------------------------ bias
@section("bias")
def bias_section():
    st.header("A bias before BN is redundant")
    st.markdown(
        f"A Linear layer adds its bias b before BN. Eq. (1) moves the mean by exactly b, and (3) subtracts it again. "
        f"For neurons {', '.join(map(str, neurons))} the bias is {', '.join(number(float(b), 3) for b in result.bias)}"
        + (" (a seeded stand-in: a synthetic batch has no Linear layer)" if config.source == "synthetic" else "")
        + f"; removing it moves μ by {', '.join(number(float(s), 3) for s in result.bias_mean_shift)} and changes x̂ by at most "
        f"**{number(result.bias_x_hat_difference, 2)}** over all {n_all} neurons (float rounding). Its gradient, Σᵢ ∂L/∂xᵢ, is "
        f"**{number(result.grad_sum, 2)}** (below): the bias never learns. That is why a layer followed by BN is usually built with `bias=False`: β takes its role."
    )


bias_section()

# ------------------------------------------------------------------ running statistics
@section("running")
def running_section():
    st.header("Running statistics (for evaluation)")
    st.markdown(
        f"In training BN also keeps estimates for test time: starting from PyTorch's 0 (mean) and 1 (variance), this batch updates them with "
        f"{'momentum' if config.momentum is not None else 'the cumulative average, weight'} {result.momentum_factor:g} on the new batch, "
        f"using the **unbiased** variance σ²·m/(m−1) = σ²·{m}/{m - 1}."
    )
    st.latex(r"\hat\mu \leftarrow (1-\alpha)\,\hat\mu + \alpha\,\mu_\mathcal{B} \qquad \hat\sigma^2 \leftarrow (1-\alpha)\,\hat\sigma^2 + \alpha\,\tfrac{m}{m-1}\sigma^2_\mathcal{B}")
    running = pd.DataFrame({"neuron": neurons, "μ (batch)": result.mean, "σ² (biased)": result.var, "σ² (unbiased)": result.unbiased_var, "running mean": result.running_mean, "running variance": result.running_var})
    st.dataframe(readable(running), hide_index=True, width="stretch")


running_section()

# ------------------------------------------------------------------ backward
@section("backward")
def backward_section():
    st.header("The backward pass")
    st.markdown("A loss L = ½ Σ (y − t)² with seeded random targets t sends ∂L/∂y = y − t back through BN. Written out (g = γ ∂L/∂y):")
    st.latex(r"\frac{\partial L}{\partial x_i} = \frac{1}{m\sqrt{\sigma^2_\mathcal{B}+\epsilon}}\Big(m\,g_i - \sum_j g_j - \hat{x}_i \sum_j g_j \hat{x}_j\Big)")
    st.latex(r"\frac{\partial L}{\partial \gamma} = \sum_i \frac{\partial L}{\partial y_i}\hat{x}_i \qquad \frac{\partial L}{\partial \beta} = \sum_i \frac{\partial L}{\partial y_i}")
    b1, b2, b3 = st.columns(3)
    b1.metric("Largest |Σᵢ ∂L/∂xᵢ| over all neurons", number(result.grad_sum, 2), delta="sums to zero over the batch", delta_color="off", delta_arrow="off")
    b2.metric(f"∂L/∂γ, neuron {focus}", number(float(result.grad_gamma[0])))
    b3.metric(f"∂L/∂β, neuron {focus}", number(float(result.grad_beta[0])))
    st.caption(
        "The gradient with respect to BN's input sums to zero across the batch for every neuron: the mean subtraction removes "
        "any change that moves all values together. That is the bias's gradient above."
    )
    st.subheader("∂L/∂x: bnviz's formula vs PyTorch autograd")
    draw_chart(st, gradient_chart(result), takeaway=gradient_takeaway(result), width="stretch")
    st.caption("One point per example of the three neurons shown: bnviz's `norms.batch_norm_backward` (the formula above) against autograd through `torch.nn.BatchNorm1d`. On the dashed diagonal they are equal.")

    st.subheader("bnviz vs torch on this batch (float64)")
    if result.torch_refusal:
        st.warning(
            f"PyTorch {torch.__version__.split('+')[0]} refuses these settings in training mode: “{result.torch_refusal}”. "
            "bnviz computes them (and shows the NaN of a constant neuron); the comparison needs ε > 0."
        )
    else:
        checks = pd.DataFrame(
            [{"quantity": name, "largest |bnviz − torch|": difference, f"within {TOLERANCE:g}": "yes" if difference <= TOLERANCE else ("both NaN" if math.isnan(difference) else "NO")} for name, difference in result.checks.items()]
        )
        st.dataframe(checks, hide_index=True, width="stretch", column_config={"largest |bnviz − torch|": st.column_config.NumberColumn(format="%.2e")})
        st.caption("Forward: torch.nn.BatchNorm1d in training mode with the same γ, β, ε and momentum; running statistics: its buffers after this batch; backward: autograd through it.")


backward_section()

# ------------------------------------------------------------------ conventions
@section("conventions")
def conventions_section():
    st.header("Framework conventions")
    # a static table: its text wraps, where a dataframe's last column ran out of a laptop's screen
    st.table(pd.DataFrame(result.conventions), hide_index=True)
    st.caption("PyTorch's column is read from the installed torch: its defaults from `torch.nn.BatchNorm1d`'s signature, the rest measured by running it. Keras is not installed; its column is its documented behaviour. Keras 0.99 = PyTorch 0.01.")


conventions_section()

source_expander(norms.batch_norm_steps, norms.update_running_stats, norms.batch_norm_backward, analyse)
downloads(
    "normalization_math",
    config,
    {
        "Three neurons before and after": pd.concat([neurons_records(result, "x").assign(stage="before"), neurons_records(result, "y").assign(stage="after")]),
        "All neurons mean and std": all_neurons_records(result),
        "Gradients bnviz vs autograd": gradient_records(result),
    },
    from_sections=("steps", "regimes", "epsilon", "bias", "running", "backward"),
)

# ------------------------------------------------------------------ play / pause / step
@section("stepper")
def stepper_section():
    st.header("Eq. (1)-(4) while the network trains")
    st.markdown(
        f"The paper's MLP, now with BN (ε = {config.eps:g}, momentum {'None' if config.momentum is None else f'{config.momentum:g}'}), "
        f"trained batch by batch (batches of {config.batch_size}, SGD). **Step** trains on one batch: see its mean and variance, "
        "the running estimates move towards them by the momentum, and γ and β take their gradient step. **Play**, **Pause**, **Reset**."
    )
    training_stepper(
        "math",
        ModelConfig(hidden=PAPER_HIDDEN, activation="sigmoid", norm="batch", bn_eps=config.eps, bn_momentum=config.momentum),
        TrainConfig(steps=1000, batch_size=config.batch_size, lr=0.1, seed=config.seed, eval_every=100, eval_examples=500),
        first_unit=min(config.first_neuron, PAPER_HIDDEN[0] - NUM_SHOWN),  # a synthetic batch may be wider than the MLP
    )


stepper_section()

device_caption()
