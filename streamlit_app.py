"""bnviz: the entry point. ``streamlit run streamlit_app.py``.

Declares the navigation; each page is a short script in ``pages/``. Sections
follow the article's three levels.
"""
import streamlit as st

st.set_page_config(page_title="bnviz: Batch Normalization, live", page_icon="📊", layout="wide")

PAGES = {
    "In 30 seconds": [
        st.Page("pages/home.py", title="BN in 30 seconds", icon="⏱️", default=True),
    ],
    "In 3 minutes": [
        st.Page("pages/normalization_math.py", title="Normalization math", icon="🧮", url_path="normalization-math"),
        st.Page("pages/train_vs_eval.py", title="Train vs eval statistics", icon="⚖️", url_path="train-vs-eval"),
        st.Page("pages/paper_results.py", title="The original paper's results", icon="📄", url_path="paper-results"),
    ],
    "Understanding BN": [
        st.Page("pages/why_bn_works.py", title="Why does BN work?", icon="🔬", url_path="why-bn-works"),
        st.Page("pages/distribution_shift.py", title="Distribution shift and the NaN failure", icon="💥", url_path="distribution-shift"),
        st.Page("pages/bn_vs_layernorm.py", title="BN vs LayerNorm (and Group, Instance)", icon="🧱", url_path="bn-vs-layernorm"),
        st.Page("pages/placement.py", title="Before or after the nonlinearity", icon="🔀", url_path="placement"),
    ],
}

navigation = st.navigation({section: pages for section, pages in PAGES.items() if pages})
navigation.run()
