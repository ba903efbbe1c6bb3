"""The layer sampler: per-module statistics on sampled steps, NaN/Inf forensics, in budget.

How it stays cheap (docs/layers.md has the measurements):
- On a step it does not sample, :meth:`LayerSampler.on_boundary` compares two integers and a
  float; no tensor is touched and no step hook is installed. What runs every step is one
  forward pre-hook per root model (keeps a reference to the batch and, for a model whose
  forward draws random numbers, the CPU RNG state, for forensics) and the tripwire (an
  optimizer step pre-hook that reads the loss and a few small gradients, CPU only).
- A sampled step gets ONE global module forward hook (one install however many modules; kept
  while the next step is sampled too). Post-accumulate-grad hooks on every parameter only
  while the backward order is unknown and on forensic samples. Never
  ``register_full_backward_hook`` (~220 µs per module per step). Removed in ``finally``.
- Per module output, sum, L2 norm, min and max written into the sampler's
  :class:`~tuidebug.probe.statbuffer.StatBuffer` while the output is still in cache: on the
  CPU by a C kernel in one read (exact zeros counted too), else by three torch reductions
  with ``out=`` (``std_mean`` alone costs 150 µs here); parameter-gradient norms into its
  tail the same way (torch: one ``torch._foreach_norm``). The buffer's prefix is the one
  host copy of the sample (on CUDA without blocking: read at a later boundary once its event
  completed).
  On an accelerator small outputs are batched instead (one stack and four kernels per group
  of equal shapes at the step's end: launches, not bytes, are the cost there). Grad mode is
  off during them (cheaper than a detached view of each output); a ReLU of the output just
  measured takes its min and max from that output's (one torch op fewer).
- Dense sampling (every step or nearly) spreads the costly extras over a cycle of
  ``DENSE_CYCLE`` samples: update ratio and weight norms, exact-zero counts, histograms.
- The cadence comes from :class:`~tuidebug.probe.schedule.Schedule`: the sampler times itself
  (hooks, statistics, the copy; on CUDA the host side only) and samples as often as ``budget``
  of the measured step time allows. ``every=N`` forces it.

std is computed from the sum and the L2 norm (``E[x²] - E[x]²`` in float64 on the host): exact
enough for a debugging view, far cheaper than a two-pass std on the device.

Numerics: hooks read ``output.detach()`` and return None, so the forward result and the autograd
graph are untouched; the sampler never changes train/eval mode and never draws random numbers.

Which module does what (imports go downwards only):
- ``sampler.py``: :class:`LayerSampler`, the public interface (``add_model``,
  ``add_optimizer``, ``on_boundary`` and its fast path, ``on_loss``, ``suspend``/``resume``,
  ``close``) and the layer table. It is made of the mixins below.
- ``hooks.py``: arming a sample (``_arm``: snapshot, buffer, the global forward hook) and the
  hooks: the every-step root pre-hook, ``_on_forward`` -> ``_record`` per module call, the
  gradient hooks of forensic samples.
- ``measure.py``: the statistics of one output, in its hook (``_measure``) or batched at the
  step's end (``_flush``).
- ``finish.py``: ``_finish`` (norms, the one host copy), ``_drain`` (CUDA copies in flight),
  ``_complete`` (host values -> the :class:`LayerStats` message; non-finite values located).
- ``tripwire.py``: the every-step check before each optimizer update, and the replay of a
  tripped step that locates the first non-finite value.
- ``forensics.py``: keeping the batch and the last finite weights (``_freeze``), forensic
  samples, the :class:`NonFinite` reports.
- ``stats.py``, ``shapes.py``: pure functions (histograms, the per-layer fold of a sample's
  values; the shape texts, ``describe``).
- ``base.py``: the bottom: ``_Sample`` (what one sampled step collects), the sampler's state
  (``_SamplerState.__init__``) and the constants more than one module reads.

How one sample flows: ``on_boundary`` of the step before it -> ``_arm`` (hooks.py) -> in the
step's forward, ``_on_forward`` -> ``_record`` -> ``_measure`` now or deferred (measure.py);
in its backward, the parameter and tensor hooks (hooks.py) -> ``on_boundary`` of the step
itself -> ``_finish`` (finish.py: ``_flush`` of the deferred outputs, the hooks down, the norms,
the host copy) -> ``_complete`` (on CUDA via ``_drain`` at a later boundary) -> one
:class:`LayerStats` message. Beside it, every step: the root pre-hook keeps the batch, and the
tripwire (tripwire.py) checks before each update; a trip replays the step there, a non-finite
value seen in ``_complete`` or in the loss goes to forensics.py, which reports it and, until
located, asks for forensic samples (the next steps sampled, every value counted).

Why mixins: the pieces share one state, and the every-step path is measured to the
microsecond (docs/design.md, "Facts that shape the code": an attribute read costs 1-5 µs in
context). Mixin classes keep each ``self.x`` one instance attribute read, as in the single
class they were cut from; a piece holding the state and calling the others through it would
add a read to each access. Where a piece has no state (statistics folds, histograms, shapes)
it is plain module-level functions. The methods one mixin calls in another are declared for
the type checker on ``_SamplerState`` (``base.py``), so no mixin imports another.
"""

from __future__ import annotations

from tuidebug.probe.layers.finish import host_copy
from tuidebug.probe.layers.hooks import DENSE_CYCLE
from tuidebug.probe.layers.sampler import LayerSampler
from tuidebug.probe.layers.shapes import describe

__all__ = ["DENSE_CYCLE", "LayerSampler", "describe", "host_copy"]
