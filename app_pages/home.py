"""Home: Batch Normalization in 30 seconds."""
import streamlit as st

from bnviz.app import Controls, curve_panels, device_caption, downloads, format_percent, preset_links, run_experiment, training_stepper
from bnviz.charts import curve_records
from bnviz.diagrams import mlp_dot
from bnviz.experiments.home import HomeConfig
from bnviz.data import TEST_IMAGES
from bnviz.formatting import format_points

st.title("Batch Normalization in 30 seconds")
preset_links("home")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "**Batch Normalization (BN)** standardises each neuron's input over the mini-batch "
    "(subtract the batch mean, divide by the batch standard deviation), then lets the network "
    "re-scale and re-shift it with two learned numbers, γ and β. "
    "The result: deep networks train faster, tolerate larger learning rates and care less about "
    "their initialisation. Below, the same network is trained twice, live, on MNIST digits."
)

defaults = HomeConfig()
controls = Controls("home")
with st.expander("Settings of the experiment", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        activation = controls.select("Activation", "act", ["sigmoid", "tanh", "relu"], defaults.activation)
    with c2:
        lr = controls.select("Learning rate (SGD)", "lr", [0.01, 0.03, 0.1, 0.3, 1.0, 3.0], defaults.lr, slider=True)
    with c3:
        steps = controls.slider("Training steps (batches of 60)", "steps", 100, 3000, defaults.steps, step=100)
    with c4:
        seed = controls.slider("Seed", "seed", 0, 9, defaults.seed)
controls.show_notes()
config = defaults.replace(activation=activation, lr=lr, steps=steps, seed=seed)

# one diagram per row: side by side, the longer BN chain was squeezed to unreadable labels
st.caption("Without BN")
st.graphviz_chart(mlp_dot(config.hidden, with_bn=False, activation=activation))
st.caption("With BN (before each nonlinearity, as in the original paper)")
st.graphviz_chart(mlp_dot(config.hidden, with_bn=True, activation=activation))

metrics = st.container()
acc_col, loss_col = st.columns(2)
draw = curve_panels([(acc_col, "test_acc", f"Test accuracy during training (first {config.train_config().eval_examples:,} test images)"), (loss_col, "train_loss", "Training loss")], total_steps=config.steps)

result = run_experiment("home", config, live=draw)
draw(result.runs)
no_bn, bn = result.by_label("no BN"), result.by_label("BN")

with metrics:
    m1, m2, m3 = st.columns(3)
    m1.metric(f"Test accuracy without BN (all {TEST_IMAGES:,} test images)", format_percent(no_bn.final_test_acc))
    m2.metric(f"Test accuracy with BN (all {TEST_IMAGES:,} test images)", format_percent(bn.final_test_acc), delta=format_points(bn.final_test_acc - no_bn.final_test_acc))
    # the paper's way of saying "faster": steps BN needs to match the plain model's final accuracy
    plain_best = float(no_bn.test_acc.max())
    bn_steps = bn.steps_to_accuracy(plain_best)
    plain_steps = no_bn.steps_to_accuracy(plain_best)
    steps_label = f"Steps to {format_percent(plain_best)} on the curve (no BN's best there, first {config.train_config().eval_examples:,} test images)"
    if bn_steps and plain_steps:
        m3.metric(steps_label, f"BN: {bn_steps}", delta=f"no BN: {plain_steps} ({plain_steps / bn_steps:.1f}× more)", delta_color="off")
    else:
        m3.metric(steps_label, "BN: never", delta=f"no BN: {plain_steps}", delta_color="off")

for run in result.runs:
    if run.diverged:
        st.warning(
            f"The {run.label} model **diverged** at step {run.diverged_step}: its loss became NaN or infinite. "
            "The learning rate is too large for it; the curve stops there."
        )

halfway = len(bn.eval_step) // 4
st.markdown(
    f"After **{bn.eval_step[halfway]}** steps the BN model is at **{format_percent(bn.test_acc[halfway])}** test accuracy, "
    f"the plain one at **{format_percent(no_bn.test_acc[halfway])}**. "
    f"At the end ({config.steps} steps, all {TEST_IMAGES:,} test images): BN {format_percent(bn.final_test_acc)}, "
    f"no BN {format_percent(no_bn.final_test_acc)}. Trained in {bn.seconds + no_bn.seconds:.1f} s on {bn.device}."
)
st.caption("Every number and curve on this page was computed just now (or read from the cache of an identical earlier run).")
downloads("home", config, {"Test accuracy": curve_records(result.runs, "test_acc"), "Training loss": curve_records(result.runs, "train_loss")})

st.header("One batch at a time")
st.markdown(
    "The BN model above, trained again with **Step**: each press trains on one more batch of 60 and shows, for three "
    "neurons of a BN layer, this batch's mean and variance (what BN normalises with in training), the running "
    "estimates it keeps for evaluation, and the γ and β it is learning. **Play** keeps stepping; **Pause** stops; **Reset** starts over."
)
training_stepper("home", config.models()[1], config.train_config())
device_caption()
