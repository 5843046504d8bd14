import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("BNVIZ_DEVICE", "cpu")
# Tests never read or fill the user's result cache (subprocesses inherit this);
# the decompressed MNIST copy in the repo cache is shared.
os.environ["BNVIZ_RESULTS_DIR"] = tempfile.mkdtemp(prefix="bnviz-test-results-")
# AppTest runs a page's script once and never ticks a run_every fragment, so pages wait for
# their jobs inside the script run there (bnviz.app._waits_in_script). The browser suite's
# server drops it (tests/e2e/conftest.py): there jobs are followed by fragments, as for users.
os.environ["BNVIZ_JOBS_IN_SCRIPT"] = "1"


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (pytest.ini's ``-n 2 --dist loadgroup``) the browser tests of one
    file run together on one worker, in the file's order, on that worker's app server
    (a session fixture); the every-page test's pages spread over the workers (the browser
    suite is the longest part: on one worker it was the suite's critical path)."""
    for item in items:
        if item.get_closest_marker("e2e"):
            spread = item.originalname == "test_every_page_renders_and_answers_a_control"
            item.add_marker(pytest.mark.xdist_group(f"browser-{item.name if spread else item.path.stem}"))


@pytest.fixture(scope="session")
def mnist():
    import torch

    from bnviz.data import load_mnist

    torch.set_num_threads(1)
    return load_mnist("cpu")
