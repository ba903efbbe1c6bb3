"""The catalogue of rules: id, severity, what went wrong, why it matters, how to fix it.

Ids are stable (they are used by ``--ignore``, ``[tool.tuidebug]`` and the console). A rule's
default severity can be changed per project in ``pyproject.toml``. A rule's logic lives in the
group of ``tuidebug/checks/groups/`` that lists its id in ``rules`` (see engine.py: how to add a
rule).
"""

from __future__ import annotations

from dataclasses import dataclass

SEVERITIES = ("info", "warning", "error")
# What a severity says about the run (printed with `tuidebug check`'s alerts).
SEVERITY_MEANING = {
    "info": "wasteful (the run is right, but spends parameters, memory or time)",
    "warning": "likely wrong results (the run goes on, but what it learns or reports is off)",
    "error": "broken run (it cannot train as meant)",
}


def severity_rank(severity: str) -> int:
    """0 info, 1 warning, 2 error (unknown: warning)."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else 1


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str
    title: str
    why: str
    fix: str


_RULES = [
    Rule(
        "grad-not-zeroed",
        "error",
        "gradients are not cleared between optimizer steps",
        "each step's gradient is added to the previous ones, so the update keeps growing and "
        "points along stale directions",
        "call optimizer.zero_grad() (or model.zero_grad()) once per step, before backward()",
    ),
    Rule(
        "eval-mode-training",
        "error",
        "the model is in eval mode while it is trained",
        "dropout is off and BatchNorm uses (and never updates) its running statistics, so the "
        "model trains as a different network from the one you meant",
        "call model.train() before the training loop and again after every evaluation pass",
    ),
    Rule(
        "train-mode-eval",
        "warning",
        "an evaluation pass runs in train mode",
        "dropout is active and BatchNorm normalizes with batch statistics (and updates its "
        "running ones) during evaluation: the metrics are noisy and the model drifts",
        "call model.eval() before evaluating and model.train() after",
    ),
    Rule(
        "eval-builds-graph",
        "warning",
        "an evaluation forward pass builds an autograd graph",
        "every activation is kept for a backward that never comes: memory grows (CUDA OOM in "
        "validation) and evaluation runs slower",
        "wrap evaluation in `with torch.no_grad():` or `with torch.inference_mode():`",
    ),
    Rule(
        "softmax-into-ce",
        "error",
        "probabilities are fed to a loss that expects logits (softmax before cross_entropy)",
        "cross_entropy applies log_softmax itself; softmax first squashes the scores into "
        "[0, 1], gradients nearly vanish and the loss stalls near ln C",
        "pass the raw scores (logits) to CrossEntropyLoss; drop the softmax from the model",
    ),
    Rule(
        "sigmoid-into-bce-logits",
        "error",
        "probabilities are fed to BCEWithLogitsLoss (sigmoid before the loss)",
        "BCEWithLogitsLoss applies a sigmoid itself; a second one keeps predictions within "
        "(0.5, 0.73) and the loss cannot go to zero",
        "drop the sigmoid before BCEWithLogitsLoss (or use BCELoss on probabilities)",
    ),
    Rule(
        "logprobs-as-probs",
        "error",
        "log-probabilities are passed where probabilities are expected",
        "kl_div's target is read as probabilities unless log_target=True; negative values "
        "make the loss meaningless",
        "pass probabilities (target.exp()) or set log_target=True",
    ),
    Rule(
        "nll-on-raw-scores",
        "error",
        "nll_loss gets raw scores instead of log-probabilities",
        "nll_loss only picks -input[target]; without log_softmax the loss is unbounded below "
        "and the model learns to blow up one score",
        "apply log_softmax before nll_loss, or use cross_entropy on the raw scores",
    ),
    Rule(
        "bias-before-batchnorm",
        "info",
        "a Linear/Conv layer with a bias feeds straight into BatchNorm",
        "BatchNorm subtracts the mean, which cancels the bias: the bias is a spurious parameter",
        "create the layer with bias=False",
    ),
    Rule(
        "initial-loss",
        "warning",
        "the initial loss is far from what an untrained model should give",
        "an untrained C-class classifier should predict roughly uniformly, i.e. a cross "
        "entropy near ln C; far above means a bad initialization (over-confident outputs), far "
        "below means the labels leak or the loss is mis-wired",
        "initialize the last layer small (or zero) and check what goes into the loss",
    ),
    Rule(
        "loss-nonfinite",
        "error",
        "the loss is NaN or infinite",
        "once the loss is not finite, the weights become NaN and training is over",
        "lower the learning rate, clip gradients, check the inputs and any log/division in "
        "the loss",
    ),
    Rule(
        "loss-diverging",
        "error",
        "the loss is diverging",
        "a loss that climbs far above where it started usually means the learning rate is "
        "too high or the updates are unstable",
        "lower the learning rate (try `tuidebug lr-find`), add warmup or gradient clipping",
    ),
    Rule(
        "loss-flat",
        "warning",
        "the loss does not move",
        "a loss that stays flat means the weights are not learning: learning rate too small, "
        "gradients blocked, or the model's output ignores its input",
        "check the learning rate (`tuidebug lr-find`), that gradients reach the parameters, "
        "and try to overfit one batch (`--overfit-batch`)",
    ),
    Rule(
        "lr-zero",
        "error",
        "the learning rate is zero",
        "with a zero learning rate the optimizer steps but the weights never change",
        "check the learning rate passed to the optimizer and the scheduler's schedule",
    ),
    Rule(
        "lr-never-changes",
        "warning",
        "a learning-rate scheduler exists but the rate never changes",
        "the scheduler's step() is never called, so the schedule you designed does not apply",
        "call scheduler.step() after optimizer.step() (per step or per epoch, as designed)",
    ),
    Rule(
        "exploding-gradients",
        "warning",
        "gradients are exploding",
        "gradients far larger than the weights make updates jump around or overflow",
        "lower the learning rate, clip gradients (torch.nn.utils.clip_grad_norm_), check the "
        "initialization and normalization",
    ),
    Rule(
        "vanishing-gradients",
        "warning",
        "gradients are vanishing in early layers",
        "when the first layers get gradients many orders of magnitude smaller than the last, "
        "they do not learn",
        "use ReLU/GELU instead of saturating activations, normalization layers, residual "
        "connections, or a better initialization",
    ),
    Rule(
        "dead-relu",
        "warning",
        "most units of a ReLU layer are dead",
        "a unit whose input is negative for every sample outputs zero and gets no gradient: "
        "it never recovers",
        "lower the learning rate, check the initialization (biases), or use LeakyReLU/GELU",
    ),
    Rule(
        "update-ratio",
        "warning",
        "weight updates are far from ~1e-3 of the weights",
        "an update/weight ratio far below 1e-3 means the weights barely move; far above means "
        "the step size is too large",
        "tune the learning rate (try `tuidebug lr-find`)",
    ),
    Rule(
        "param-no-grad",
        "warning",
        "trainable parameters never get a gradient",
        "they are not connected to the loss (an unused layer, a .detach() or a tensor created "
        "outside the graph), so they never train",
        "find where the graph is cut, or set requires_grad=False on what should be frozen",
    ),
    Rule(
        "param-not-in-optimizer",
        "error",
        "trainable parameters are missing from every optimizer",
        "their gradients are computed but no optimizer updates them",
        "pass model.parameters() (all of them) to the optimizer, or create it after the model "
        "is complete",
    ),
    Rule(
        "same-batch",
        "warning",
        "the same batch is used step after step",
        "the model memorizes one batch instead of learning from the data",
        "draw a new batch each step (iterate the DataLoader inside the loop)",
    ),
    Rule(
        "nonfinite-input",
        "error",
        "the model's input contains NaN or Inf",
        "one non-finite input value makes the loss, and then every weight, NaN",
        "clean the data (missing values, log of zero, division by zero) before training",
    ),
    Rule(
        "labels-out-of-range",
        "error",
        "labels are outside the range the loss accepts",
        "a class index >= the number of outputs (or a binary target outside [0, 1]) is "
        "either an error (CUDA device-side assert) or a silently wrong loss",
        "map the labels to 0..C-1 (or [0, 1] for binary losses), or give the model C outputs",
    ),
    Rule(
        "loss-broadcast",
        "error",
        "the loss's input and target shapes differ and broadcast",
        "torch broadcasts e.g. (N, 1) against (N,) to (N, N): the loss compares every "
        "prediction with every target",
        "make the shapes equal (squeeze the output or unsqueeze the target)",
    ),
    Rule(
        "data-bottleneck",
        "warning",
        "steps spend most of their time waiting for data",
        "the model sits idle while batches are prepared",
        "use DataLoader(num_workers=..., pin_memory=True, persistent_workers=True), move "
        "per-sample work out of __getitem__, or cache the data",
    ),
    Rule(
        "train-eval-overlap",
        "warning",
        "evaluation batches contain rows the model was trained on",
        "a score on rows the model has already seen measures memory, not generalisation: the "
        "validation numbers look better than the model is (evaluating on the training set, or a "
        "validation split that overlaps the training split)",
        "evaluate on a held-out split made once, before training (one random_split or one "
        "permutation, the same for both sides), and check that no row is in both; rows that "
        "are legitimately identical across splits are duplicates to remove first",
    ),
    Rule(
        "duplicate-rows",
        "warning",
        "many training rows are exact copies of other rows",
        "copies weigh those rows more than the rest, the model overfits them, and copies that "
        "also land in the validation split inflate its score; many copies of one row usually "
        "come from a loader bug (a placeholder for failed reads, a wrong index range)",
        "deduplicate the data, or fix what fills rows in (failed reads, index arithmetic); "
        "oversampling on purpose (a WeightedRandomSampler) repeats rows too: ignore the rule then",
    ),
    Rule(
        "constant-input",
        "warning",
        "an input feature or channel never changes",
        "a feature that is the same in every row carries no information: usually the pipeline "
        "lost it (a missing-value fill, a clamp or a unit conversion that zeroed it, a "
        "channel never copied), and the model learns without it",
        "look at how that feature or channel is built before it reaches the model; if it is "
        "constant on purpose (a ones column, padding), drop it",
    ),
    Rule(
        "input-outlier",
        "warning",
        "an input value lies very far from the rest of its feature",
        "one huge input (a sentinel such as -999 for a missing value, a unit error, an image "
        "left unnormalised) makes huge activations and gradients, and the model fits it "
        "instead of the data",
        "find where that value comes from: encode missing values as a flag, convert units, "
        "normalise every sample the same way; clip or log-transform a heavy-tailed feature",
    ),
    Rule(
        "constant-labels",
        "error",
        "the training labels never change",
        "with one label for every sample the model can only learn to predict that label: "
        "the loss falls to zero and nothing is learnt (usually the labels were lost: a lookup "
        "that always fell back to a default, a cast that truncated them, a wrong column)",
        "print a few labels where the batches are made and fix how they are built; contrastive "
        "losses that put the positive at index 0 (MoCo-style) do this on purpose: ignore the "
        "rule there",
    ),
    Rule(
        "missing-class",
        "warning",
        "a class the model predicts never appears in the training labels",
        "the model learns to never predict that class; usually a split of sorted data, a "
        "filter or a binning dropped it, or the model has more outputs than the data classes",
        "shuffle before splitting (or split per class), check filters and bin edges, and give "
        "the model as many outputs as there are classes",
    ),
    Rule(
        "overfit-failed",
        "error",
        "the model could not overfit a single batch",
        "a correct model memorizes one batch quickly; if the loss does not approach zero "
        "there is a bug in the wiring (loss, labels, gradient flow, learning rate)",
        "check what goes into the loss and that the weights change; see the other alerts",
    ),
]

RULES: dict[str, Rule] = {rule.id: rule for rule in _RULES}
