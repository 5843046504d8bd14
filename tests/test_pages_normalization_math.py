"""AppTest of app_pages/normalization_math.py: it runs, shows bnviz equal to torch, and every control moves what is shown."""
from apptest_helpers import assert_classroom_ready, assert_sections_as_registered, chart_count, metric_values, open_page

# an untrained MLP keeps the MNIST view fast; training has its own control test below
FAST = {"trained": 0, "batch": 16}


def shown(at) -> tuple:
    """Everything a control could change: metrics, text, equations and tables."""
    return (
        tuple(sorted(metric_values(at).items())),
        tuple(m.value for m in at.markdown),
        tuple(l.value for l in at.latex),
        tuple(c.value for c in at.caption),
        tuple(d.value.to_csv() for d in at.dataframe),
    )


def changed(at, before) -> bool:
    assert not at.exception, at.exception
    return shown(at) != before


def test_page_shows_every_step_and_bnviz_equals_torch():
    at = open_page("app_pages/normalization_math.py", **FAST).run()
    assert not at.exception
    assert_sections_as_registered(at, "normalization_math")
    assert_classroom_ready(at)  # tooltips on every control, a takeaway under every chart (#20)
    metrics = metric_values(at)
    assert metrics["Values per neuron (m)"] == "16"
    assert "equal within 1e-6" in [m.delta for m in at.metric if m.label.startswith("bnviz vs torch")][0]
    assert chart_count(at) == 9  # four steps, two three-neuron views, all neurons, nonlinearity, gradients
    assert len(at.latex) >= 9
    checks = at.dataframe[-1].value
    assert list(checks["quantity"]) == ["forward y", "running mean", "running variance", "dL/dx", "dL/dγ", "dL/dβ"]
    assert (checks["largest |bnviz − torch|"] <= 1e-6).all()
    conventions = at.table[-1].value
    assert "momentum" in list(conventions["setting"])


def test_each_bn_control_changes_the_numbers():
    at = open_page("app_pages/normalization_math.py", **FAST).run()
    moves = [
        lambda: at.slider(key="math.gamma").set_value(2.5),
        lambda: at.slider(key="math.beta").set_value(-1.5),
        lambda: at.select_slider(key="math.eps").set_value(0.1),
        lambda: at.select_slider(key="math.batch").set_value(4),
        lambda: at.slider(key="math.draw").set_value(3),
        lambda: at.slider(key="math.neuron").set_value(40),
        lambda: at.selectbox(key="math.momentum").select(None),
        lambda: at.radio(key="math.nonlin").set_value("relu"),
        lambda: at.selectbox(key="math.layer").select(3),
        lambda: at.select_slider(key="math.trained").set_value(100),
    ]
    for move in moves:
        before = shown(at)
        move()
        at.run()
        assert changed(at, before), move
    assert "relu" in " ".join(metric_values(at))
    assert "after 100 Adam steps" in " ".join(m.value for m in at.markdown)


def test_synthetic_controls_and_a_constant_neuron_without_eps():
    at = open_page("app_pages/normalization_math.py", source="synthetic", batch=16).run()
    assert not at.exception and "synthetic batch" in " ".join(m.value for m in at.markdown)
    for move in [
        lambda: at.slider(key="math.mean").set_value(-4.0),
        lambda: at.select_slider(key="math.spread").set_value(10.0),
        lambda: at.slider(key="math.skew").set_value(5.0),
        lambda: at.slider(key="math.outliers").set_value(0.1),
        lambda: at.toggle(key="math.constant").set_value(True),
    ]:
        before = shown(at)
        move()
        at.run()
        assert changed(at, before), move
    at.select_slider(key="math.eps").set_value(0.0).run()
    assert not at.exception
    assert "NaN" in at.error[0].value  # the divergence is explained, not a traceback
    assert "refuses" in at.warning[0].value


def test_bad_link_values_are_clamped_with_a_note():
    at = open_page("app_pages/normalization_math.py", trained=0, batch=16, gamma=99, neuron=-3, eps="banana").run()
    assert not at.exception
    notes = " ".join(i.value for i in at.info)
    assert "gamma" in notes and "neuron" in notes and "banana" in notes
