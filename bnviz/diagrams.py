"""Network diagrams as Graphviz DOT source (rendered by the browser, no binary needed)."""
from __future__ import annotations


def mlp_dot(hidden: tuple[int, ...], with_bn: bool, activation: str = "sigmoid", placement: str = "before") -> str:
    """A left-to-right diagram of ``784 -> hidden... -> 10``, BN boxes where they sit."""
    from .charts import PALETTE

    bn_color = PALETTE["BN"]
    lines = [
        "digraph mlp {",
        "  rankdir=LR; bgcolor=transparent; nodesep=0.15; ranksep=0.25;",
        '  node [shape=box, style="rounded,filled", fillcolor="#f2f2f2", color="#999999", fontname="Helvetica", fontsize=13];',
        '  edge [color="#888888", arrowsize=0.6];',
        '  input [label="image\\n784"];',
    ]
    previous = "input"
    for index, width in enumerate(hidden, start=1):
        stages = [(f"lin{index}", f"Linear\\n{width}", "#f2f2f2")]
        act = (f"act{index}", activation, "#f2f2f2")
        bn = (f"bn{index}", "BN", bn_color)
        if with_bn:
            stages += [bn, act] if placement == "before" else [act, bn]
        else:
            stages.append(act)
        for name, label, fill in stages:
            font = "white" if fill == bn_color else "black"
            lines.append(f'  {name} [label="{label}", fillcolor="{fill}", fontcolor="{font}"];')
            lines.append(f"  {previous} -> {name};")
            previous = name
    lines.append('  out [label="Linear\\n10"];')
    lines.append(f"  {previous} -> out;")
    lines.append("}")
    return "\n".join(lines)
