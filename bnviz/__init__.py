"""bnviz: Batch Normalization explained with live experiments on MNIST.

The core never imports streamlit (only :mod:`bnviz.app` does), so every
experiment runs from plain Python, the CLI and the tests.
"""
__version__ = "0.1.0"
