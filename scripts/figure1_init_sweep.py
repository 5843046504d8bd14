"""The sweep behind PaperFigure1Config's default init: N(0, sigma^2) for a few sigma.

For each sigma, the paper's network with and without BN (5,000 steps, lr 0.1,
binarised inputs, one seed): final test accuracy, where the plain network's
last-layer sigmoid inputs start (median |median| over units at the first
evaluation after step 0) and how far they drift in units of their own band
(training mode). Run: ``python scripts/figure1_init_sweep.py [sigma ...]``.
"""
import sys

import numpy as np

from bnviz.experiments.paper_figure1 import PaperFigure1Config, band_width, drift_verdict, relative_median_drift, relative_spread_change, run, unit_percentiles
from bnviz.train import configure_torch_threads


def main(sigmas):
    configure_torch_threads()
    print("sigma | acc no BN | acc BN | no BN layer-3 |median| at start | band at start | rel. drift no BN | BN | spread change no BN | BN")
    for sigma in sigmas:
        result = run(PaperFigure1Config(init_std=sigma, seeds=1))
        no_bn, bn = result.by_label("no BN"), result.by_label("BN")
        _, values = unit_percentiles(no_bn, 3)
        start_median = float(np.median(np.abs(values[1, :, 1])))
        start_band = float(np.median(values[1, :, 2] - values[1, :, 0]))
        rel = [float(np.nanmean(relative_median_drift(r, 3, mode="training"))) for r in (no_bn, bn)]
        spread = [float(np.nanmean(relative_spread_change(r, 3, mode="training"))) for r in (no_bn, bn)]
        print(f"{sigma:g} | {no_bn.final_test_acc:.4f} | {bn.final_test_acc:.4f} | {start_median:.2f} | {start_band:.2f} | {rel[0]:.3f} | {rel[1]:.3f} | {spread[0]:.3f} | {spread[1]:.3f}", flush=True)


if __name__ == "__main__":
    main([float(s) for s in sys.argv[1:]] or [0.03, 0.1, 0.3, 1.0])
