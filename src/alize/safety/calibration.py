"""From raw head probabilities to the calibrated, gated scores every classifier exposes.

One home for the rule shared by the shipped classifiers (:mod:`alize.safety.classifier`,
:mod:`alize.safety.minilm`, :mod:`alize.safety.multilingual`) and by the training code that
chooses their thresholds:

* each head's probability ``p`` becomes ``sigmoid(logit(p) - logit(t))``, where ``t`` is the
  head's decision threshold chosen on out-of-fold training predictions, so 0.5 is the default
  threshold of every score the service exposes;
* the *gated* heads (the eight dev-set categories) then take the geometric mean of their own
  calibrated score and that of the ``any`` head ("flagged for anything"): a per-category head
  fires only when the better-trained gate agrees, which keeps the union of eight noisy heads
  from piling up false positives.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
#: the head trained on "flagged for anything", used to gate the per-category heads
GATE_HEAD = "any"


def sigmoid(x: F32) -> F32:
    out = 1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0)))
    return out.astype(np.float32, copy=False)


def logit(p: F32) -> F32:
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    out: F32 = np.log(q / (1.0 - q)).astype(np.float32, copy=False)
    return out


def calibrate(raw: F32, thresholds: F32, gated: npt.NDArray[np.bool_], gate: int | None) -> F32:
    """Calibrated scores (0.5 = each head's threshold), gated heads combined with the gate head.

    ``raw`` is (texts, heads) of probabilities; ``gate`` is the column of the ``any`` head, or
    None for no gating.
    """
    out = sigmoid(logit(raw.astype(np.float32, copy=False)) - logit(thresholds))
    if gate is not None and gated.any():
        # the geometric mean of two calibrated scores is >= 0.5 only when both are near or
        # above their thresholds
        out[:, gated] = np.sqrt(out[:, gated] * out[:, gate][:, None])
    return out
