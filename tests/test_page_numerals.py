"""Numbers in the pages' user-facing text come from a result or a config, or are allowed by name.

Every string literal in ``app_pages/*.py`` (the literal parts of f-strings
included; LaTeX and format specs excluded) is searched for a quantity: a
numeral followed by a unit of measure (×, %, points, seconds, steps, images,
runs, seeds, units, layers, ...), where typed-in estimates hide ("about 10×
slower", "about 3 minutes", "15 extra passes"). A value computed from a result
or a config is an f-string field, so it never matches. What remains must be in
:data:`ALLOWED`, each entry with its reason: a quoted literature value with its
source, a fixed property of the data or of a diagram, or a labelled estimate.
An entry that no longer matches anything fails too, so the list cannot go stale.
"""
import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUANTITY = re.compile(
    r"(?<![\w.])(\d[\d,]*(?:\.\d+)?)\s*"
    r"(×|x\b|%|points?\b|seconds?\b|minutes?\b|s\b|steps?\b|passes\b|images?\b|runs?\b|seeds?\b|models?\b|trainings?\b|batches\b|units?\b|layers?\b|epochs?\b|times\b)"
)

# (page file, text around the numeral) -> why it may stay a literal
ALLOWED = {
    ("bn_vs_layernorm.py", "3 models × steps"): "the budget help's formula: the experiment always trains three models per cell",
    ("placement.py", "3 models × steps"): "the budget help's formula: the placement experiment always trains three models per seed",
    ("home.py", "in 30 seconds"): "the article's level name ('In 30 seconds'), not a measurement",
    ("paper_results.py", "Inception with BN at **5×**"): "quoted: Ioffe & Szegedy 2015, Sec. 4.2, Table 2 (BN-x5)",
    ("paper_results.py", "and **30×** its"): "quoted: Ioffe & Szegedy 2015, Sec. 4.2, Table 2 (BN-x30)",
    ("paper_results.py", "BN-x5 needed 14× fewer"): "quoted: Ioffe & Szegedy 2015, Table 2, in a caption that says the numbers are the paper's",
    ("paper_results.py", "BN-x5 took 14× fewer"): "quoted: Ioffe & Szegedy 2015, Table 2, cited in the sentence",
    ("paper_results.py", "steps to 72.2%"): "quoted: the paper's Table 2 column header",
    ("paper_results.py", "72.2%"): "quoted: the paper's Table 2",
    ("paper_results.py", "72.7%"): "quoted: the paper's Table 2",
    ("paper_results.py", "73.0%"): "quoted: the paper's Table 2",
    ("paper_results.py", "74.8%"): "quoted: the paper's Table 2",
    ("paper_results.py", "69.8%"): "quoted: the paper's Table 2 (and Sec. 4.2.2, cited in the sentence)",
    ("paper_results.py", "≤ 0.1%"): "quoted: Ioffe & Szegedy 2015, Sec. 4.2.2 (plain sigmoid Inception), cited in the sentence",
    ("placement.py", "100× smaller"): "a labelled rule of thumb ('usual') for Adam's vs SGD's learning rates, advice, not a measurement",
    ("train_vs_eval.py", "(3 × 100 sigmo"): "the paper's network (Ioffe & Szegedy 2015, Sec. 4.1; bnviz.models.PAPER_HIDDEN)",
    ("train_vs_eval.py", "60,000 images"): "MNIST's training set size, a fact of the data set",
    ("train_vs_eval.py", "60,000 training images"): "MNIST's training set size, a fact of the data set",
    ("train_vs_eval.py", "~100 steps"): "labelled estimate (~): 1/m for Keras's momentum 0.99 = PyTorch 0.01, in a help text",
    ("why_bn_works.py", "95% interval"): "the verdict rule's confidence level (bnviz.verdicts), stated as the rule",
    ("why_bn_works.py", "over 10 steps"): "the drift chart's fixed smoothing window (bnviz.charts)",
    ("small_batches.py", "≥ 1%"): "the Bessel panel's agreement threshold (AGREEMENT), a metric label",
    ("small_batches.py", "0% line"): "a chart's zero line, not a measurement",
    ("distribution_shift.py", "The 8 units"): "the units table's fixed length",
    ("distribution_shift.py", "all 5,000 images"): "the adaptation pool's fixed size (few_sample_adaptation)",
    ("bn_vs_layernorm.py", "over the 100 units"): "the width of the invariance table's layer (a fixed diagram)",
    ("bn_vs_layernorm.py", "the 256 images"): "the invariance table's fixed batch",
    ("bn_vs_layernorm.py", "(8 channels)"): "the pooling diagram's fixed layer",
    ("bn_vs_layernorm.py", "7 pooled image rows"): "the pooling diagram's fixed sequence",
    ("bn_vs_layernorm.py", "3×3 conv"): "a kernel size, not a measurement",
    ("bn_vs_layernorm.py", "to 4×4"): "the pooling diagram's fixed grid",
}


def _literal_quantities(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "latex":
            skip |= {id(sub) for sub in ast.walk(node)}
        if isinstance(node, ast.FormattedValue) and node.format_spec is not None:
            skip |= {id(sub) for sub in ast.walk(node.format_spec)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in skip:
            for match in QUANTITY.finditer(node.value):
                found.append((node.lineno, node.value[max(0, match.start() - 40) : match.end() + 10].replace("\n", " ")))
    return found


def test_every_literal_quantity_in_a_page_is_config_derived_quoted_or_labelled():
    unexplained, used = [], set()
    for path in sorted((ROOT / "app_pages").glob("*.py")):
        for line, context in _literal_quantities(path):
            keys = [key for key in ALLOWED if key[0] == path.name and key[1] in context]
            used.update(keys)
            if not keys:
                unexplained.append(f"{path.name}:{line}: …{context}…")
    assert not unexplained, "numbers typed into page text (compute them, read them from the config, or allow them with a reason):\n" + "\n".join(unexplained)
    assert not set(ALLOWED) - used, f"allow-list entries that match nothing any more: {sorted(set(ALLOWED) - used)}"


def test_the_check_catches_a_typed_in_estimate(tmp_path):
    page = tmp_path / "page.py"
    page.write_text('import streamlit as st\nst.button("x", help="About 3 minutes on one CPU core.")\nst.markdown(f"{steps} steps")\n')
    found = _literal_quantities(page)
    assert len(found) == 1 and "3 minutes" in found[0][1]
