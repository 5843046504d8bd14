"""AppTest of play / pause / step on the home and normalization-math pages."""
from apptest_helpers import open_page


def stepper_table(at):
    frames = [frame.value for frame in at.dataframe if {"unit", "batch mean", "running variance", "γ"} <= set(frame.value.columns)]
    return frames[0] if frames else None


def test_home_step_trains_one_batch_and_the_numbers_move():
    at = open_page("app_pages/home.py", steps=100).run()
    assert not at.exception
    assert stepper_table(at) is None  # nothing trained yet
    at.button(key="home.stepper.step").click().run()
    first = stepper_table(at)
    assert first is not None and list(first["unit"]) == [0, 1, 2]
    assert any("Step 1 of 100" in caption.value for caption in at.caption)
    at.button(key="home.stepper.step").click().run()
    second = stepper_table(at)
    assert any("Step 2 of 100" in caption.value for caption in at.caption)
    for column in ("batch mean", "batch variance", "running mean", "running variance", "γ", "β"):
        assert (first[column] != second[column]).any(), column
    at.radio(key="home.stepper.layer").set_value(1).run()  # another BN layer: other numbers, no training
    assert any("Step 2 of 100" in caption.value for caption in at.caption)
    assert (stepper_table(at)["running mean"] != second["running mean"]).any()
    at.button(key="home.stepper.reset").click().run()
    assert stepper_table(at) is None and any("Step 0 of 100" in caption.value for caption in at.caption)


def test_play_and_pause_on_the_normalization_math_page():
    at = open_page("app_pages/normalization_math.py", trained=0, batch=16, neuron=5).run()
    assert not at.exception
    at.button(key="math.stepper.play").click().run()  # Play: the fragment ticks (not in AppTest) and steps
    assert at.button(key="math.stepper.play").label == "Pause"
    table = stepper_table(at)
    assert table is not None and list(table["unit"]) == [5, 6, 7]
    at.button(key="math.stepper.play").click().run()  # Pause
    assert at.button(key="math.stepper.play").label == "Play" and not at.exception
