"""The Streamlit Community Cloud arrangement: hosted/streamlit_app.py runs the same app,
and hosted/requirements.txt is the root's install with CPU-only torch."""
import re

from apptest_helpers import ROOT, open_page


def _requirements(path) -> dict[str, str]:
    specs = {}
    for line in (ROOT / path).read_text().splitlines():
        line = line.split("#")[0].strip()
        if line and not line.startswith("-"):
            name = re.split(r"[=<>!~ ]", line, maxsplit=1)[0]
            specs[name] = line[len(name):]
    return specs


def test_hosted_requirements_are_the_root_ones_with_cpu_only_torch():
    local, hosted = _requirements("requirements.txt"), _requirements("hosted/requirements.txt")
    assert set(local) == set(hosted)
    for name in ("torch", "torchvision"):
        assert hosted[name] == local[name] + "+cpu"  # the same release, CPU build
    for name in set(local) - {"torch", "torchvision"}:
        assert hosted[name] == local[name], name
    options = [line for line in (ROOT / "hosted/requirements.txt").read_text().splitlines() if line.startswith("-")]
    assert options == ["--extra-index-url https://download.pytorch.org/whl/cpu"]


def test_hosted_entry_point_runs_the_same_app():
    import os

    assert (ROOT / "hosted" / "app_pages").resolve() == (ROOT / "app_pages").resolve()
    before = os.environ.pop("BNVIZ_TRAIN_IMAGES", None)
    try:
        at = open_page("hosted/streamlit_app.py", steps="100").run()
        assert os.environ.get("BNVIZ_TRAIN_IMAGES") == "uint8"  # no float32 copy on a 1 GiB tier
    finally:
        os.environ.pop("BNVIZ_TRAIN_IMAGES", None)
        if before is not None:
            os.environ["BNVIZ_TRAIN_IMAGES"] = before
    assert not at.exception
    assert [t.value for t in at.title] == ["Batch Normalization in 30 seconds"]
    assert len(at.metric) == 3
