"""Distribution shift and the NaN failure: population statistics that no longer fit."""
import math

import numpy as np
import pandas as pd
import streamlit as st

from bnviz.app import Controls, chart_mark, curve_panels, device_caption, draw_chart, downloads, format_percent, preset_links, run_experiment, section, source_expander
from bnviz.bn_debug import check_running_stats, debug_checks, norm_outputs
from bnviz.bn_stats import recalibrate_batch_norm
from bnviz.charts.distribution_shift import eps_sweep_chart, fixes_chart, layer_maxima_chart, units_chart
from bnviz.experiments.distribution_shift import EPS_SWEEP, FLOAT16_MAX, PRECISIONS, SHIFT_OPTIONS, ShiftConfig, float16_headroom_sentence, nonfinite_sentence

SHIFT_NAMES = {
    "translate": "translated digits", "rotate": "rotated digits", "invert": "inverted digits", "noise": "noisy digits",
    "contrast": "lower contrast (grey background)", "digits": "held-out digits (train on 0-4, test on 5-9)",
}
SCOPE = "shift"
NEAR_ZERO_VAR = 1e-4  # amplification >= ~100x at any eps below 1e-4


def number(value: float) -> str:
    if value is None or not math.isfinite(value):
        return "NaN"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


st.title("Distribution shift and the NaN failure")
preset_links("distribution_shift")  # classroom presets: buttons and links (bnviz/page_presets.py)
st.markdown(
    "In evaluation mode a BN layer no longer looks at the batch: it normalises every input with the **population statistics** "
    "(running mean and variance) it estimated during training. Train on one distribution (the article's sneakers), evaluate "
    "on another (derby shoes), and those statistics no longer fit: normalised values land far from N(0, 1), activations "
    "explode, and in the article's 3D-CNN the output became NaN *as soon as the model switched to evaluation mode*. "
    "Below, a ReLU network with BN after each activation is trained on MNIST, then evaluated on shifted digits."
)
st.latex(r"\text{eval mode: } y = \gamma\,\frac{x - \text{running\_mean}}{\sqrt{\text{running\_var} + \epsilon}} + \beta"
         r"\qquad\text{amplification} = \frac{1}{\sqrt{\text{running\_var} + \epsilon}} \le \frac{1}{\sqrt{\epsilon}}")

defaults = ShiftConfig()
controls = Controls(SCOPE)
with st.expander("Settings of the experiment", expanded=False):
    c1, c2, c3, c4 = st.columns(4)
    with c1:
        shift = controls.select("Shift of the test images", "shift", SHIFT_OPTIONS, defaults.shift, format_func=lambda s: SHIFT_NAMES[s])
        strength = controls.slider("Shift strength", "strength", 0.0, 1.0, defaults.strength, step=0.1, disabled=shift == "digits",
                                   help="0 = no shift. Ignored for held-out digits.")
        train_examples = controls.select("Training images", "n", [100, 1000, 10_000, 60_000], defaults.train_examples,
                                         help="100 is the article's ~100 patients.", format_func=lambda n: f"{n:,}")
    with c2:
        depth = controls.slider("Hidden layers", "depth", 1, 6, defaults.depth)
        width = controls.select("Units per layer", "width", [32, 64, 100, 256], defaults.width)
        placement = controls.radio("BN placement", "bn", ["after", "before"], defaults.placement, horizontal=True,
                                   format_func=lambda p: f"{p} the ReLU")
    with c3:
        eps = controls.select("BN eps", "eps", list(EPS_SWEEP), defaults.eps, slider=True, format_func=lambda e: f"{e:.0e}",
                              help="PyTorch's default is 1e-5; the largest amplification is 1/sqrt(eps).")
        precision = controls.radio("Precision of evaluation", "precision", list(PRECISIONS), defaults.precision, horizontal=True)
    with c4:
        corrupted = controls.select("Corrupted training images", "corrupt", [0, 1, 10, 100], defaults.corrupted_examples,
                                    help="Blank scans standardised per image: (x - mean) / std = 0/0 = NaN pixels.")
        steps = controls.slider("Training steps (batches of 60)", "steps", 100, 2000, defaults.steps, step=100)
        seed = controls.slider("Seed", "seed", 0, 9, defaults.seed)
controls.show_notes()
if corrupted >= train_examples:
    st.info(f"{corrupted} corrupted images would leave no clean training image out of {train_examples}; using 1.")
    corrupted = 1
config = defaults.replace(shift=shift, strength=strength, train_examples=train_examples, depth=depth, width=width, placement=placement,
                          eps=eps, precision=precision, corrupted_examples=corrupted, steps=steps, seed=seed)

st.subheader("1. Training: the model trains fine")
train_col, test_col = st.columns(2)
draw = curve_panels(
    [(train_col, "train_acc", "Training accuracy, train mode (batch statistics)"), (test_col, "test_acc", "Clean test accuracy, eval mode (population statistics)")],
    total_steps=config.steps,
    y_domain=[0, 1],
)

result = run_experiment("distribution_shift", config, live=draw)
draw(result.runs)
bn_run = result.runs[0]
clean_train, clean_eval = result.mode("clean", "train"), result.mode("clean", "eval")
shift_train, shift_eval = result.mode("shifted", "train"), result.mode("shifted", "eval")
test_words = f"{config.test_examples:,} test images" if shift != "digits" else "test images of digits 5-9"
shift_words = SHIFT_NAMES[shift] + ("" if shift == "digits" else f", strength {strength:g}")

units = pd.DataFrame(result.units)  # sections 3 and 4 and the downloads read these (units, first layer)
stats = result.running_stats
first = stats[0]


@section("evaluation")
def evaluation_section():
    st.subheader(f"2. Evaluation on the shifted data: {shift_words}")
    m1, m2, m3, m4 = st.columns(4)
    m1.metric("Accuracy, train mode", format_percent(shift_train["accuracy"]), help="Batch statistics: each batch of 60 shifted images normalised with its own mean and variance.")
    m2.metric("Accuracy, eval mode", format_percent(shift_eval["accuracy"]), help="Population statistics: the running mean and variance estimated in training.",
              delta=f"clean images: {format_percent(clean_eval['accuracy'])}", delta_color="off")
    m3.metric("Largest |BN output|, eval mode", number(shift_eval["max_abs"]), delta=f"train mode: {number(shift_train['max_abs'])}", delta_color="off")
    m4.metric("NaN/inf outputs, eval mode", f"{shift_eval['nonfinite_outputs']:,}", delta=f"train mode: {shift_train['nonfinite_outputs']:,}", delta_color="off")

    if not result.accuracy_defined:
        st.info("Digits 5-9 were never labels in training, so accuracy on them is not defined; the page compares activations and NaN counts instead.")
    verdict = []
    if shift_eval["nonfinite_outputs"]:
        verdict.append(f"In eval mode **{shift_eval['nonfinite_outputs']:,} of the {test_words}** produce NaN or inf, while the same weights in train mode "
                       f"produce **{shift_train['nonfinite_outputs']:,}**: a model that trains fine fails as soon as it switches to evaluation.")
    else:
        ratio = shift_eval["max_abs"] / max(shift_train["max_abs"], 1e-12)
        verdict.append(f"On the shifted images the largest BN output is **{number(shift_eval['max_abs'])}** in eval mode against "
                       f"**{number(shift_train['max_abs'])}** in train mode (**{ratio:,.0f}×**); no output is NaN in {precision}.")
        if precision == "float16":
            verdict.append(float16_headroom_sentence(result))
    if result.accuracy_defined:
        verdict.append(f"Accuracy: **{format_percent(shift_train['accuracy'])}** with batch statistics, **{format_percent(shift_eval['accuracy'])}** "
                       f"with population statistics (on clean images: {format_percent(clean_train['accuracy'])} and {format_percent(clean_eval['accuracy'])}).")
    st.markdown(" ".join(verdict))


evaluation_section()


@section("units")
def units_section():
    st.subheader("3. Unit by unit: who explodes, and why")
    left, right = st.columns(2)
    draw_chart(left, layer_maxima_chart(result, float16_line=precision == "float16" or shift_eval["max_abs"] > FLOAT16_MAX / 100), width="stretch")
    if units["running_var"].notna().any():
        draw_chart(right, units_chart(result), width="stretch")
    else:
        right.info("Every unit's running variance is NaN, so there is no amplification to plot: the statistics themselves are broken.")
    if first["nonfinite_units"]:
        st.markdown(f"The running statistics themselves are not finite: **{sum(s['nonfinite_units'] for s in stats):,} units** across "
                    f"{sum(1 for s in stats if s['nonfinite_units'])} BN layers have a NaN running mean or variance (see section 4).")
    else:
        tiny = units[units["running_var"] < NEAR_ZERO_VAR]
        never_fired = int(((units["running_var"] < NEAR_ZERO_VAR) & (units["running_mean"].abs() < 1e-6)).sum())
        if len(tiny):
            worst = units.loc[units["max_abs_eval"].idxmax()]
            st.markdown(
                f"**{len(tiny)} units** have a running variance near zero (below {NEAR_ZERO_VAR:g}; smallest {tiny['running_var'].min():.1e}): "
                + (f"{never_fired} of them also have a running mean of 0, ReLUs that **never fired** on a training image, so BN after the ReLU saw a constant 0. " if placement == "after" and never_fired else "")
                + f"In eval mode such a unit multiplies any deviation by up to 1/√(var + eps) = **{tiny['amplification'].max():,.0f}×** (the ceiling at eps {config.eps:.0e} is {1 / math.sqrt(config.eps):,.0f}×). "
                f"The largest output, **{number(worst['max_abs_eval'])}**, comes from unit {int(worst['unit'])} of layer {int(worst['layer'])} "
                f"(running variance {worst['running_var']:.2g}, amplification {worst['amplification']:,.1f}×; in train mode its largest output is {number(worst['max_abs_train'])})."
            )
        else:
            st.markdown(f"No unit has a running variance near zero (smallest: {min(s['min_running_var'] for s in stats):.2g}), so no unit is amplified "
                        f"more than {max(s['max_amplification'] for s in stats):.1f}×" + (": with BN before the ReLU, every BN input varies in training." if placement == "before" else "."))
    top = units.sort_values("max_abs_eval", ascending=False).head(8)
    st.caption("The 8 units with the largest eval-mode output on the shifted images")
    st.table(top.set_index("layer").rename(columns={"running_mean": "running mean", "running_var": "running variance", "amplification": "1/√(var+eps)",
                                 "max_abs_eval": "largest |output|, eval", "max_abs_train": "largest |output|, train"})
             .style.format({"running mean": "{:.3g}", "running variance": "{:.2g}", "1/√(var+eps)": "{:,.1f}", "largest |output|, eval": lambda v: number(v) if math.isfinite(v) else "NaN/inf", "largest |output|, train": "{:.3g}"}))


units_section()


@section("nan")
def nan_section():
    st.subheader("4. A real NaN: where it comes from")
    st.markdown("Nothing on this page writes a NaN by hand. Two mechanisms produce one for real; each is measured on this model.")
    route_a, route_b = st.columns(2)
    with route_a:
        st.markdown("**(a) One corrupted training image poisons the running statistics**")
        if not config.corrupted_examples:
            st.markdown("This model was trained on clean images only. Set *Corrupted training images* (or click the scenario above): "
                        "a blank scan standardised per image, (x − mean)/std, is 0/0 = NaN in every pixel.")
        elif not result.corrupted_steps:
            st.markdown(f"The {config.corrupted_examples} corrupted images were never drawn in {config.steps} steps, so the running statistics stayed finite.")
        else:
            bad_layers = [s["layer"] for s in stats if s["nonfinite_units"]]
            st.markdown(
                f"{config.corrupted_examples} of the {config.train_examples:,} training images are blank scans standardised per image (NaN pixels). "
                f"They were drawn at steps **{', '.join(map(str, result.corrupted_steps[:8]))}**{'…' if len(result.corrupted_steps) > 8 else ''}: "
                f"the loss was NaN, and the training loop skipped those updates (as `torch.amp.GradScaler` skips steps with non-finite gradients). "
                f"But the forward pass had already updated BN's buffers: running_mean ← 0.9·running_mean + 0.1·NaN. "
                f"Now **{len(bad_layers)} of {len(stats)} BN layers** hold NaN statistics. Train mode never reads them, so training goes on "
                f"(final training accuracy {format_percent(bn_run.train_acc[-1])}); eval mode reads them: **{clean_eval['nonfinite_outputs']:,} of "
                f"{config.test_examples:,} clean test images** give NaN."
            )
    with route_b:
        st.markdown("**(b) A half-precision forward overflows**")
        limit_eps = result.overflow_eps("float16")
        here, where = result.float32_peak(config.eps)
        if first["nonfinite_units"]:
            st.markdown("This model's running statistics are already NaN (route a), so every eval-mode forward is NaN whatever the precision; "
                        "set *Corrupted training images* to 0 to measure this route.")
        else:
            st.markdown(
                f"float16's largest finite value is {FLOAT16_MAX:,.0f}. Above it a value becomes ±inf, and a later sum of +inf and −inf terms is NaN. "
                + (nonfinite_sentence(result.nonfinite_trace("float16", limit_eps), limit_eps) if limit_eps is not None else "")
                + f"At this model's eps ({config.eps:.0e}) the largest value anywhere in the float32 forward on the shifted images is **{number(here)}** "
                f"(output of `{where}`), " + (f"{FLOAT16_MAX / here:,.2f}× below the limit. " if here < FLOAT16_MAX else f"{here / FLOAT16_MAX:,.2f}× above the limit. ")
                + (f"Sweeping eps at evaluation on the same weights, float16 gives NaN/inf from **eps = {limit_eps:.0e}** down "
                   f"(amplification up to {1 / math.sqrt(limit_eps):,.0f}×)." if limit_eps is not None else
                   "No eps in the sweep makes float16 overflow on these images.")
                + f" bfloat16 keeps float32's range: {sum(r['nonfinite_outputs'] for r in result.sweep('bfloat16')):,} non-finite outputs over the whole sweep."
            )
            smallest = units.loc[units["running_var"].idxmin()]
            stored = float(np.float16(smallest["running_var"]))
            if stored == 0.0 and smallest["amplification"] < 0.95 / math.sqrt(config.eps):  # only where it changes the amplification
                st.markdown(
                    f"float16 also loses the smallest variances: its smallest positive number is {float(np.finfo(np.float16).smallest_subnormal):.1e}, so unit "
                    f"{int(smallest['unit'])} of layer {int(smallest['layer'])} (running variance {smallest['running_var']:.1e}) is stored as **0**, and a float16 "
                    f"forward amplifies it by 1/√eps = {1 / math.sqrt(config.eps):,.0f}× instead of {smallest['amplification']:,.0f}×."
                )
            draw_chart(st, eps_sweep_chart(result), width="stretch")
    later = stats[1:]
    if later and not first["nonfinite_units"]:
        worst_later = max(later, key=lambda s: s["max_amplification"] if math.isfinite(s["max_amplification"]) else -1)
        st.markdown(
            f"**(c) Depth.** Amplifications multiply only when several layers have near-zero running variances. Here, after layer 1, the largest "
            f"amplification is {number(worst_later['max_amplification'])}× (layer {worst_later['layer']}, smallest running variance {worst_later['min_running_var']:.2g}): "
            + ("later layers see inputs already normalised by the first, so depth does not compound the explosion in this model."
               if math.isfinite(worst_later["max_amplification"]) and worst_later["max_amplification"] < 10 else "deeper layers add their own amplification.")
        )


nan_section()


@section("fixes")
def fixes_section():
    st.subheader("5. The fixes, compared on the same model")
    draw_chart(st, fixes_chart(result), width="stretch")
    fixes = pd.DataFrame(result.fixes)
    st.table(fixes.set_index("fix").rename(columns={"nonfinite_outputs": "NaN/inf outputs", "max_abs": "largest |BN output|"})
             .style.format({"accuracy": lambda v: format_percent(v), "loss": "{:.3g}", "largest |BN output|": "{:,.4g}"}))
    best = max((row for row in result.fixes if not row["nonfinite_outputs"]), key=lambda r: r["accuracy"] if result.accuracy_defined else -r["max_abs"], default=None)
    if best is not None:
        st.markdown(f"Best here: **{best['fix']}**" + (f", {format_percent(best['accuracy'])} on the shifted images." if result.accuracy_defined else f", largest output {number(best['max_abs'])}."))
    st.markdown(
        f"The article's workaround, batch statistics at evaluation, has a cost: a prediction depends on its batch-mates. Batching the same shifted "
        f"images with other batch-mates changes **{format_percent(result.batchmate_changed)}** of the predictions, and a single image cannot be "
        f"evaluated at all; PyTorch raises: `{result.single_input_error}`. Re-estimating the statistics once (AdaBN on unlabeled shifted images, "
        f"or precise BN on clean training images) gives fixed statistics again, so eval mode stays deterministic."
    )


fixes_section()

# ---------------------------------------------------------------- 6. few-sample adaptation (issue 14)
from bnviz.charts.few_sample_adaptation import adaptation_chart, adaptation_frame  # noqa: E402
from bnviz.experiments.few_sample_adaptation import ADABN, FULL, MIXED, PLAIN, SAMPLE_SIZES, FewSampleConfig, adapt_statistics, crossing, mix_statistics  # noqa: E402


@section("few")
def few_sample_section():
    few_mark = chart_mark()
    st.subheader("6. Adapting with few target images: AdaBN and a prior")
    st.markdown(
        "Re-estimating the statistics on the shifted data (AdaBN, Li et al. 2016) needs shifted images, but how many? With only a "
        "handful, the estimate is noisy. Schneider et al. 2020 mix the source (training) statistics with the target estimate from *n* "
        "images, weighting the source like *N* extra images: **N** is the prior strength (N = 0 is AdaBN, a huge N is plain evaluation)."
    )
    st.latex(r"\mu = \tfrac{N}{N+n}\,\mu_{\text{source}} + \tfrac{n}{N+n}\,\mu_{\text{target}}, \qquad "
             r"\sigma^2 = \tfrac{N}{N+n}\,\sigma^2_{\text{source}} + \tfrac{n}{N+n}\,\sigma^2_{\text{target}}")
    few_defaults = FewSampleConfig()
    few_controls = Controls(SCOPE)  # its own notes, shown under this section
    f1, f2, f3 = st.columns([2, 2, 3])
    with f1:
        prior = few_controls.select("Prior strength N", "prior", [0, 1, 4, 16, 64, 256, 1024], few_defaults.prior_strength, slider=True,
                                    help="Schneider et al.'s N: the source statistics weigh as much as N target images. 0 = AdaBN.")
    with f2:
        draws = few_controls.slider("Random draws of the n images", "draws", 1, 10, few_defaults.draws, help="The band spans the worst and the best draw.")
    with f3:
        run_few = few_controls.toggle("Run this experiment", "fewrun", False,
                                      help="Retrains the BN model above (same seed, same weights), then adapts copies of it from each n and draw; a few seconds, then cached.")
    few_controls.show_notes()
    few_model = config.replace(corrupted_examples=0, precision="float32")
    if shift == "digits":
        st.info("Held-out digits were never labels in training, so there is no accuracy to adapt: choose another shift above.")
    elif not run_few:
        st.caption(f"Switch it on to measure accuracy after re-estimating the statistics from n = {SAMPLE_SIZES[0]} to {SAMPLE_SIZES[-1]:,} shifted images, "
                   f"{draws} draw{'s' if draws > 1 else ''} each, with AdaBN and with the prior N = {prior}.")
    else:
        few_config = few_defaults.replace(model=few_model, prior_strength=prior, draws=draws)
        few = run_experiment("few_sample_adaptation", few_config, label="Adapting with few target images")
        mix_label = f"{MIXED}, N = {prior}"
        adabn, mix = crossing(few, ADABN), crossing(few, MIXED)
        k1, k2, k3, k4 = st.columns(4)
        k1.metric("Plain evaluation", format_percent(few.plain_accuracy), help="The source running statistics, unchanged (the same model as section 2, retrained with the same seed).")
        k2.metric("AdaBN on all target images", format_percent(few.full_accuracy), help="Statistics of all 5,000 images of the adaptation pool.")
        sizes = [int(n) for n in few.sample_sizes]
        middle = sizes.index(16) if 16 in sizes else len(sizes) // 2
        for column, method, name in ((k3, ADABN, "AdaBN"), (k4, MIXED, f"Mix N = {prior}")):
            column.metric(f"{name}, n = {sizes[0]}", format_percent(few.mean(method)[0]), delta=f"n = {sizes[middle]}: {format_percent(few.mean(method)[middle])}",
                          delta_color="off", delta_arrow="off")
        draw_chart(st, adaptation_chart(few, mix_label), width="stretch")

        def where(cross: dict, name: str) -> str:
            if not cross["hurts"]:
                return f"{name} beats plain evaluation at **every** n measured (from n = {SAMPLE_SIZES[0]})."
            if not cross["beats"]:
                return f"{name} is **below** plain evaluation at every n measured (worst at n = {cross['worst_n']:,}: {format_percent(cross['worst_accuracy'])})."
            text = f"{name} **hurts** at n = {', '.join(f'{n:,}' for n in cross['hurts'])} (worst: {format_percent(cross['worst_accuracy'])} at n = {cross['worst_n']:,})"
            return text + (f" and beats plain evaluation from n = **{cross['beats_from']:,}** on." if cross["beats_from"] else ", and never beats it for good.")

        gain = few.full_accuracy - few.plain_accuracy
        st.markdown(
            f"On {SHIFT_NAMES[shift]}, strength {strength:g}, the source statistics give **{format_percent(few.plain_accuracy)}** "
            f"(clean images: {format_percent(few.clean_accuracy)}); all 5,000 target images give **{format_percent(few.full_accuracy)}** "
            f"({100 * gain:+.1f} points). Means over {draws} draw{'s' if draws > 1 else ''}: " + where(adabn, "AdaBN") + " " + where(mix, f"The mix with N = {prior}")
        )
        st.markdown(
            f"**n = 1.** One image has one value per unit, so its variance is exactly 0 (here {format_percent(few.zero_var_fraction[0])} of the first layer's units). "
            f"AdaBN then normalises every other image with (x − x₁)/√(0 + eps): each deviation multiplied by 1/√eps = **{1 / math.sqrt(config.eps):,.0f}×**, "
            f"and accuracy is {format_percent(few.mean(ADABN)[0])}. PyTorch refuses this case in train mode (“Expected more than 1 value per channel”); "
            "an unbiased estimate would be 0/0. The prior keeps N/(N+1) of the source variance"
            + (f" (N = {prior}: {prior / (prior + 1):.0%}), and gives {format_percent(few.mean(MIXED)[0])}." if prior else ": with N = 0 there is no prior, and the mix is AdaBN.")
        )
        st.caption(
            "How it is measured: the model of sections 1–2 (trained on clean images, no corrupted ones, float32) is copied; n shifted images are drawn from test images "
            "5,000–9,999 (never scored); one eval-mode forward pass over them replaces each BN layer's running mean and variance, layer by layer, by the mix above "
            "(target variance: the biased variance of the n values, as train-mode BN uses; source variance: PyTorch's running_var). Accuracy is on the shifted test "
            "images of section 2. Schneider et al. compute the target statistics on the test batch itself; here they are estimated once and kept fixed."
        )
        downloads("few_sample_adaptation", few_config, {"Accuracy by n (mean and range)": adaptation_frame(few), "Accuracy per draw": pd.DataFrame(few.records())},
                  title="Download the few-sample adaptation data and config", charts=(few_mark, None))
        source_expander(mix_statistics, adapt_statistics, title="The code of the adaptation")


few_sample_section()

st.subheader("How to debug this in your own model")
st.markdown("These are the checks the page just ran, as plain PyTorch you can copy. Run `debug_checks(model, x_new)` on a batch of the new data: "
            "NaN in `running_stats` means route (a); a tiny `min_running_var` and eval-mode maxima far above train mode mean the statistics do not fit; "
            "then `recalibrate_batch_norm(model, x_clean_or_new)`.")
source_expander(debug_checks, check_running_stats, norm_outputs, recalibrate_batch_norm, title="The code (the same functions this page runs)")

downloads("distribution_shift", config, {
    "BN outputs per layer": pd.DataFrame(result.layers), "BN units": units, "Fixes": pd.DataFrame(result.fixes), "eps sweep": pd.DataFrame(result.eps_sweep),
}, from_sections=("evaluation", "units", "nan", "fixes"))
device_caption()
