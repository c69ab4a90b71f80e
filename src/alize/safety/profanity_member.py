"""alt-profanity-check's learned model, reimplemented in numpy as one member of the ensemble.

alt-profanity-check (https://github.com/dimitrismistriotis/alt-profanity-check, MIT licence,
copyright Victor Zhou, Menelaos Kotoglou and Dimitrios Mistriotis) ships a scikit-learn
``TfidfVectorizer`` (lower-cased word unigrams, token pattern ``(?u)\\b\\w\\w+\\b``, English
stop words, smoothed IDF, L2 norm) and a ``CalibratedClassifierCV`` of five ``LinearSVC``
models, each with a sigmoid (Platt) calibrator; its probability is the mean of the five
calibrated probabilities. :func:`export_profanity_check` reads that fitted model at *training*
time (scikit-learn and alt-profanity-check are dev dependencies only) and keeps what inference
needs as plain arrays: the vocabulary, the IDF, the five coefficient rows and intercepts, and
the five calibrators' ``(a, b)``. The derived coefficients are shipped inside Alizé's weights
file; see ``data/NOTICE.md``.

:meth:`ProfanityMember.probabilities` reproduces ``profanity_check.predict_prob`` (checked to
~1e-6 by ``tests/safety/test_content_classifier.py``).
"""

from __future__ import annotations

import importlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
#: scikit-learn's default token pattern, which alt-profanity-check's vectorizer uses
TOKEN = re.compile(r"(?u)\b\w\w+\b")


@dataclass(frozen=True)
class ProfanityMember:
    """The arrays of alt-profanity-check's model; ``coef`` is (members, vocabulary)."""

    vocabulary: tuple[str, ...]
    idf: F64  # (vocabulary,)
    coef: F64  # (members, vocabulary)
    intercept: F64  # (members,)
    cal_a: F64  # (members,) Platt calibration: p = sigmoid(-(a * decision + b))
    cal_b: F64  # (members,)

    def __post_init__(self) -> None:
        index = {term: i for i, term in enumerate(self.vocabulary)}
        object.__setattr__(self, "_index", index)
        # idf folded into the coefficients: decision = (counts * idf) @ coef.T / ||counts * idf||
        object.__setattr__(self, "_weighted", np.ascontiguousarray((self.coef * self.idf).T))

    def arrays(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        """The member as named plain arrays for an ``.npz`` (no pickled objects)."""
        return {
            f"{prefix}vocabulary": np.array(self.vocabulary, dtype=np.str_),
            f"{prefix}idf": self.idf,
            f"{prefix}coef": self.coef,
            f"{prefix}intercept": self.intercept,
            f"{prefix}cal_a": self.cal_a,
            f"{prefix}cal_b": self.cal_b,
        }

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]], prefix: str) -> ProfanityMember:
        """Inverse of :meth:`arrays`."""

        def f64(key: str) -> F64:
            return np.ascontiguousarray(arrays[prefix + key], dtype=np.float64)

        return cls(
            vocabulary=tuple(str(t) for t in arrays[prefix + "vocabulary"]),
            idf=f64("idf"),
            coef=np.atleast_2d(f64("coef")),
            intercept=f64("intercept"),
            cal_a=f64("cal_a"),
            cal_b=f64("cal_b"),
        )

    def probabilities(self, texts: list[str]) -> F32:
        """alt-profanity-check's probability of "offensive", one value per text."""
        index: dict[str, int] = self.__dict__["_index"]
        weighted: F64 = self.__dict__["_weighted"]
        decisions = np.tile(self.intercept, (len(texts), 1))
        for row, text in enumerate(texts):
            counts = Counter(i for i in (index.get(t) for t in TOKEN.findall(text.lower())) if i is not None)
            if not counts:
                continue
            cols = np.fromiter(counts.keys(), dtype=np.int64, count=len(counts))
            tf = np.fromiter(counts.values(), dtype=np.float64, count=len(counts))
            decisions[row] += (tf @ weighted[cols]) / np.linalg.norm(tf * self.idf[cols])
        z = -(decisions * self.cal_a + self.cal_b)
        probs = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
        out: F32 = probs.mean(axis=1).astype(np.float32)
        return out


def export_profanity_check(min_abs_coef: float = 0.0) -> ProfanityMember:
    """Read alt-profanity-check's fitted model (training time only) into a :class:`ProfanityMember`.

    Vocabulary entries whose coefficients are all below ``min_abs_coef`` in magnitude are dropped
    (they still count in the L2 norm in the original, so keep 0 unless the file must shrink).
    """
    module = importlib.import_module("profanity_check.profanity_check")
    vectorizer, model = module.vectorizer, module.model
    params = vectorizer.get_params()
    expected = {
        "analyzer": "word",
        "lowercase": True,
        "ngram_range": (1, 1),
        "norm": "l2",
        "preprocessor": None,
        "strip_accents": None,
        "sublinear_tf": False,
        "token_pattern": TOKEN.pattern,
        "tokenizer": None,
        "use_idf": True,
        "binary": False,
    }
    differing = {k: params[k] for k, v in expected.items() if params[k] != v}
    if differing:
        raise ValueError(f"profanity_check vectorizer settings this export does not reproduce: {differing}")
    members = model.calibrated_classifiers_
    if any(c.method != "sigmoid" for c in members) or list(model.classes_) != [0, 1]:
        raise ValueError("profanity_check model is not a sigmoid-calibrated binary classifier")
    coef = np.stack([np.asarray(c.estimator.coef_[0], dtype=np.float64) for c in members])
    intercept = np.array([float(c.estimator.intercept_[0]) for c in members])
    cal_a = np.array([float(c.calibrators[0].a_) for c in members])
    cal_b = np.array([float(c.calibrators[0].b_) for c in members])
    terms = sorted(vectorizer.vocabulary_.items(), key=lambda kv: kv[1])
    order = np.array([i for _, i in terms], dtype=np.int64)
    keep = np.abs(coef[:, order]).max(axis=0) >= min_abs_coef
    return ProfanityMember(
        vocabulary=tuple(t for (t, _), k in zip(terms, keep, strict=True) if k),
        idf=np.asarray(vectorizer.idf_, dtype=np.float64)[order][keep],
        coef=coef[:, order][:, keep],
        intercept=intercept,
        cal_a=cal_a,
        cal_b=cal_b,
    )
