"""bnviz on Streamlit Community Cloud: the same app, installed from ``hosted/requirements.txt``.

Community Cloud takes the requirements file from the entry point's folder before
the repository root's, so deploying this file (main file path
``hosted/streamlit_app.py``) installs CPU-only torch, while ``requirements.txt``
at the root stays the local, GPU-capable install. It runs the root entry point
unchanged: ``app_pages`` here is a link to the root's ``app_pages/`` (Streamlit
resolves page paths from the entry point's folder), and the root's
``.streamlit/config.toml`` applies because Community Cloud runs ``streamlit
run`` from the repository root.
"""
import os
import runpy
import sys
from pathlib import Path

# ~1 GiB of memory: keep the training images as uint8 (no 188 MB float32 copy), whether or
# not the host shows its limit as a cgroup (bnviz.data.keep_float_copy).
os.environ.setdefault("BNVIZ_TRAIN_IMAGES", "uint8")

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # bnviz is imported from the repository root

runpy.run_path(str(ROOT / "streamlit_app.py"), run_name="__main__")
