"""Every control's tooltip in one place: what it does, and the framework's default where one exists.

``bnviz.app.Controls`` shows ``CONTROL_HELP["<scope>.<URL key>"]`` for a control whose page
gives no ``help`` of its own (a page's own help, which can quote its config, wins).
``tests/test_control_help.py`` walks every page's widgets and fails on one without help.

The framework defaults quoted here are the libraries' documented ones:
PyTorch ``nn.BatchNorm*d(eps=1e-5, momentum=0.1)`` (new = (1 - momentum)·old + momentum·batch),
Keras ``BatchNormalization(momentum=0.99, epsilon=1e-3)`` (new = momentum·old + (1 - momentum)·batch,
so Keras 0.99 is PyTorch 0.01), ``nn.LayerNorm(eps=1e-5)``, Keras ``LayerNormalization(epsilon=1e-3)``,
``torch.optim.SGD(lr=1e-3)`` and Keras ``SGD(learning_rate=0.01)``, ``torch.optim.Adam(lr=1e-3)``
as Keras's Adam, ``nn.GroupNorm`` (no default group count; Wu & He 2018 use 32), ``nn.RNN``
(tanh), and float32 as PyTorch's default dtype.
"""
from __future__ import annotations

# Sentences shared by several controls (one wording per quantity).
SEED = "The random seed of the initial weights and of the batches' order: the same seed gives the same numbers. No framework default (PyTorch draws one per process unless torch.manual_seed is called)."
SEEDS = "How many seeds (0, 1, ...) each model is trained with; a verdict needs at least 2 (one seed gives no interval), and each seed multiplies the training time."
SGD_LR = "The step size of plain SGD (w ← w − lr·gradient). Framework defaults: torch.optim.SGD 1e-3, Keras SGD 0.01."
STEPS = "How many mini-batch updates each model trains for; more steps, more time."
ACTIVATION = "The nonlinearity after each hidden layer. Frameworks have no default for it (a Keras Dense layer without one is linear)."
WIDTH = "Units (neurons) in each hidden layer."
DEPTH = "How many hidden layers the MLP has."
BATCH = "Examples per training batch: BN's statistics are taken over this many."
BN_EPS = "The ε in (x − mean)/√(var + ε), which keeps a near-constant unit from a division by ~0. Defaults: PyTorch 1e-5, Keras 1e-3."
BN_MOMENTUM = ("How fast BN's running estimates follow the batches, PyTorch's convention: new = (1 − m)·old + m·batch. "
               "Defaults: PyTorch 0.1; Keras 0.99 in its own convention (new = m·old + (1 − m)·batch), i.e. PyTorch 0.01.")
BATCH_SIZES = "Which batch sizes the sweep trains at; the fuller sweep takes longer."

CONTROL_HELP: dict[str, str] = {
    # home
    "home.act": ACTIVATION + " The paper's MNIST network uses the sigmoid.",
    "home.lr": SGD_LR + " Both models use the same rate; BN tolerates much larger ones.",
    "home.steps": STEPS + " The batch is 60 images, as in the paper's MNIST experiment.",
    "home.seed": SEED,
    # normalization math (sidebar)
    "math.layer": "Which hidden layer of the paper's 3-layer sigmoid MLP the batch's values come from.",
    "math.trained": "How long the MLP (without BN) was trained before its activations are taken: 0 is the freshly initialised network.",
    "math.mean": "The synthetic batch's mean, before BN subtracts it.",
    "math.spread": "The synthetic batch's standard deviation, before BN divides by it.",
    "math.skew": "The skew-normal shape parameter: 0 is a normal batch, larger values a lopsided one.",
    "math.outliers": "The share of values moved to ±10 standard deviations: what a batch mean and variance do with outliers.",
    "math.constant": "All of that neuron's values equal: its batch variance is 0, so ε alone decides the output.",
    "math.batch": "Values per neuron (m) that BN's mean and variance are taken over. PyTorch refuses m = 1 in training mode.",
    "math.draw": "Which random batch of this size is drawn (a seed): another batch, other statistics.",
    "math.neuron": "The first of the neurons shown; the charts show it and the next ones.",
    "math.eps": BN_EPS + " ε = 0 shows what ε prevents.",
    "math.gamma": "γ, BN's learned scale: y = γx̂ + β. PyTorch and Keras start it at 1.",
    "math.beta": "β, BN's learned shift: y = γx̂ + β. PyTorch and Keras start it at 0.",
    "math.momentum": BN_MOMENTUM + " None: the cumulative average, every batch weighted equally.",
    "math.nonlin": "Which nonlinearity the regime chart draws over BN's outputs.",
    # train vs eval
    "traineval.mom": BN_MOMENTUM,
    "traineval.bs": BATCH,
    "traineval.lr": SGD_LR,
    "traineval.steps": STEPS,
    "traineval.unit": "Which first-layer neuron the statistics charts follow.",
    "traineval.img": "Which test image is probed among random batch-mates.",
    "traineval.regn": "How many training images each run sees: fewer images, more room to overfit, and more for BN's noise to regularise.",
    "traineval.regsteps": STEPS,
    "traineval.seeds": SEEDS,
    "traineval.regshow": "Which quantity the chart draws against the batch size.",
    "traineval.reg": "Train the batch-size sweep now (it is not run until switched on); its result is cached.",
    "traineval.pblr": "The higher of the two learning rates PreciseBN is tried at (SGD; torch.optim.SGD's default is 1e-3).",
    "traineval.pbmom": BN_MOMENTUM,
    "traineval.pbsteps": STEPS,
    "traineval.pbrun": "Train the PreciseBN experiment now (it is not run until switched on); its result is cached.",
    # paper
    "paper.steps": STEPS + " The paper trains 50,000 steps of 60 images.",
    "paper.opt": "Plain SGD, or SGD with momentum 0.9 (torch.optim.SGD's momentum default is 0).",
    "paper.axis": "Draw the accuracy axis over the paper's range instead of fitting it to the curves.",
    "paper.layer": "Which hidden layer's unit panels (b) and (c) follow; the paper shows the last one.",
    "paper.base_lr": "The ×1 learning rate (SGD) the ×5 and ×30 runs multiply. torch.optim.SGD's default is 1e-3.",
    "paper.lr_steps": STEPS,
    # distribution shift
    "shift.shift": "How the test images differ from the training images.",
    "shift.strength": "How strong the shift is: 0 leaves the images as they are, 1 is the full shift.",
    "shift.n": "How many training images the model sees.",
    "shift.depth": DEPTH,
    "shift.width": WIDTH,
    "shift.bn": "BN after the ReLU (where dead units meet BN) or before it.",
    "shift.eps": BN_EPS,
    "shift.precision": "The number format of the evaluation forward pass. PyTorch's default is float32; float16 overflows above 65,504, bfloat16 keeps float32's range.",
    "shift.corrupt": "Training images replaced by blank scans standardised per image (0/0 = NaN pixels).",
    "shift.steps": STEPS,
    "shift.seed": SEED,
    "shift.prior": "Schneider et al.'s prior strength N: the source statistics count as N images against the n target images.",
    "shift.fewrun": "Run the few-image adaptation experiment now (it is not run until switched on); its result is cached.",
    # pitfalls
    "pitfalls.pass": "Which images the accidental train-mode pass reads.",
    "pitfalls.pass_batch": "Batch size of the accidental pass: each batch moves BN's running statistics once.",
    "pitfalls.fp_steps": STEPS,
    "pitfalls.shift": "How the 'shifted digits' differ from the training images.",
    "pitfalls.strength": "How strong that shift is: 0 none, 1 the full shift.",
    "pitfalls.ls_seeds": SEEDS,
    "pitfalls.ls_steps": STEPS,
    "pitfalls.width": WIDTH,
    "pitfalls.ig_batch": BATCH + " Here: the batch the gradients at initialisation are measured on.",
    "pitfalls.ig_seeds": SEEDS,
    "pitfalls.ig_view": "Which depth's network the per-layer chart shows.",
    "pitfalls.sw_steps": STEPS,
    "pitfalls.sw_lr": SGD_LR,
    "pitfalls.sw_seeds": SEEDS,
    # BN vs LayerNorm
    "norms.layout": "The shape of the tensor the norms pool over: conv feature maps, MLP features, or a sequence.",
    "norms.n": "How many examples the small batch of the pooling grids holds.",
    "norms.groups": "GroupNorm's number of channel groups. nn.GroupNorm has no default; Wu & He 2018 use 32.",
    "norms.hx": "The example of the chosen value, whose set is coloured in every grid.",
    "norms.hc": "The channel (or feature) of the chosen value.",
    "norms.hp": "The position (or time step) of the chosen value.",
    "norms.arch": "The network the batch-size sweep trains.",
    "norms.sweep": BATCH_SIZES,
    "norms.seeds": SEEDS,
    "norms.steps": STEPS + " Adam at lr 1e-3 (the default of torch.optim.Adam and Keras's Adam) at every batch size.",
    "norms.probe": "Which batch size's trained models the train-vs-eval table reads.",
    "norms.rnn_steps": STEPS + " Adam, batches of 64.",
    "norms.rnn_hidden": "Units in the RNN's state (nn.RNN's hidden_size; tanh is nn.RNN's default nonlinearity).",
    "norms.rnn_seed": SEED,
    "norms.invdelta": "The factor δ each re-scaling in the table multiplies by.",
    "norms.inveps": "The ε of every norm in the table. Defaults: PyTorch 1e-5 (BatchNorm, LayerNorm), Keras 1e-3.",
    "norms.invtrained": "Whether the table's layer is freshly initialised or trained for some steps first.",
    "norms.invbias": "Whether the linear layer before the norm has a bias (nn.Linear's default is bias=True).",
    # small batches
    "small.sizes": BATCH_SIZES,
    "small.seeds": SEEDS,
    "small.steps": STEPS + " Adam (lr default 1e-3 in torch.optim.Adam) at every batch size.",
    "small.v": "Ghost BN's virtual batch: each batch is normalised in chunks of v examples.",
    "small.r_max": "Batch Renorm's final bound on r = σ_batch/σ_running; 1 makes it BN. Ioffe 2017 ends at 3.",
    "small.d_max": "Batch Renorm's final bound on d = (μ_batch − μ_running)/σ_running; 0 makes it BN. Ioffe 2017 ends at 5.",
    "small.depth": "How many BN layers the Bessel-mismatch chain has.",
    "small.width": WIDTH,
    "small.b_steps": STEPS,
    "small.eps": BN_EPS,
    # placement
    "placement.act": ACTIVATION,
    "placement.depth": DEPTH,
    "placement.width": WIDTH,
    "placement.batch": BATCH,
    "placement.view_lr": "Which of the trained learning rates the curves and the verdict show.",
    "placement.layer": "Which hidden layer the histograms and the layer charts look into.",
    # why BN works
    "why.n_act": ACTIVATION,
    "why.n_lr": SGD_LR,
    "why.n_steps": STEPS,
    "why.p_act": ACTIVATION,
    "why.p_lr": SGD_LR,
    "why.p_steps": STEPS,
    "why.noisy": "Also probe the noisy-BN network (one more training, more time).",
}


def control_help(scope: str, key: str) -> str | None:
    """The tooltip of the control ``key`` on the page whose controls use ``scope``."""
    return CONTROL_HELP.get(f"{scope}.{key}")
