"""bnviz: the entry point. ``streamlit run streamlit_app.py``.

Declares the navigation; each page is a short script in ``app_pages/``.
Sections follow the article's three levels. (The folder is not called
``pages/``: Streamlit treats a ``pages/`` folder next to the entry point as a
legacy multipage app for the first script run of a process, so the first
visitor of a deep link on a freshly started server saw "Page not found".)
Icons are Material Symbols, which Streamlit ships as a font: they render on
machines without an emoji font.
"""
import streamlit as st

from bnviz.app import article_path, load_core, new_script_run, predictions_toggle, presenter_view, release_script_memory

st.set_page_config(page_title="bnviz: Batch Normalization, live", page_icon=":material/insights:", layout="wide")

PAGES = {
    "In 30 seconds": [
        st.Page("app_pages/home.py", title="BN in 30 seconds", icon=":material/timer:", default=True),
    ],
    "In 3 minutes": [
        st.Page("app_pages/normalization_math.py", title="Normalization math", icon=":material/calculate:", url_path="normalization-math"),
        st.Page("app_pages/train_vs_eval.py", title="Train vs eval statistics", icon=":material/balance:", url_path="train-vs-eval"),
        st.Page("app_pages/paper_results.py", title="The paper's MNIST results", icon=":material/description:", url_path="paper-results"),
    ],
    "Understanding BN": [
        st.Page("app_pages/distribution_shift.py", title="Distribution shift and NaN", icon=":material/warning:", url_path="distribution-shift"),
        st.Page("app_pages/common_pitfalls.py", title="BN pitfalls in real code", icon=":material/bug_report:", url_path="common-pitfalls"),
        st.Page("app_pages/bn_vs_layernorm.py", title="BN vs LayerNorm and others", icon=":material/view_module:", url_path="bn-vs-layernorm"),
        st.Page("app_pages/small_batches.py", title="Small batches and later fixes", icon=":material/compress:", url_path="small-batches"),
        st.Page("app_pages/placement.py", title="BN before or after activation", icon=":material/swap_horiz:", url_path="placement"),
        st.Page("app_pages/why_bn_works.py", title="Why does BN work?", icon=":material/science:", url_path="why-bn-works"),
    ],
}

navigation = st.navigation(PAGES)
new_script_run()  # the charts downloads() offers as images are this run's
presenter_view()  # the sidebar's presenter toggle, before the page draws its charts
predictions_toggle()  # the sidebar's "Predict, then reveal" (?predict=1 for a class)
load_core(navigation.title)  # a fresh server: the title and a progress line while torch loads (not a blank page)
navigation.run()
article_path([page for section in PAGES.values() for page in section], navigation)  # "Next: ..." in the article's order
release_script_memory()  # the memory this run dropped, back to the system (a hosted tier counts resident memory)
