"""Stage 4: the ground-truth reward, p(positive | text), as a callable ``reward(texts) -> list[float]`` whose
``metrics`` go into the results.

Offline: TF-IDF (word 1-2 grams) + logistic regression fitted on labelled reviews that neither SFT nor the prompts
use; its accuracy on a held-out tenth is reported. Paper scale: a Hub sentiment classifier
(``siebert/sentiment-roberta-large-english``) through a transformers pipeline.
"""

import json
import pickle
import random
from pathlib import Path


def build(out_dir: Path, reviews: list[dict], seed: int, log) -> dict:
    """Fit on 90% of ``reviews``, measure accuracy on the rest and on 48-word prefixes of the rest (completions
    are short, so the prefix accuracy is the one that matters), pickle the pipeline to ``out_dir``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    if len(reviews) < 100:
        raise ValueError(f"The TF-IDF reward needs labelled reviews to fit on; got {len(reviews)}: raise "
                         "classifier_reviews (or set reward_model_name to a Hub classifier).")
    reviews = list(reviews)
    random.Random(seed).shuffle(reviews)
    cut = int(0.9 * len(reviews))
    fit, held_out = reviews[:cut], reviews[cut:]
    classifier = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=200_000, sublinear_tf=True),
        LogisticRegression(C=4.0, max_iter=1000),
    )
    classifier.fit([r["text"] for r in fit], [r["label"] for r in fit])
    labels = [r["label"] for r in held_out]
    full = classifier.score([r["text"] for r in held_out], labels)
    prefixes = classifier.score([" ".join(r["text"].split()[:48]) for r in held_out], labels)
    metrics = {"kind": "tfidf_logistic_regression", "fit_reviews": len(fit), "held_out_reviews": len(held_out),
               "held_out_accuracy": round(full, 4), "held_out_accuracy_48_word_prefixes": round(prefixes, 4)}
    log(f"reward: TF-IDF + logistic regression, held-out accuracy {full:.3f} (48-word prefixes {prefixes:.3f})")
    (out_dir / "classifier.pkl").write_bytes(pickle.dumps(classifier))
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


class TfidfReward:
    """p(positive) from the pipeline `build` pickled (our own file: unpickling it is safe)."""

    def __init__(self, out_dir: Path):
        self.classifier = pickle.loads((Path(out_dir) / "classifier.pkl").read_bytes())
        self.metrics = json.loads((Path(out_dir) / "metrics.json").read_text())
        self._column = list(self.classifier.classes_).index(1)

    def __call__(self, texts: list[str]) -> list[float]:
        return self.classifier.predict_proba(list(texts))[:, self._column].tolist() if texts else []


class PipelineReward:
    """Paper scale: p(positive) from a Hub sentiment classifier (GPU if available, needs the Hub)."""

    def __init__(self, model_name: str, batch_size: int = 64):
        import torch
        from transformers import pipeline

        device = 0 if torch.cuda.is_available() else -1
        self.pipe = pipeline("sentiment-analysis", model=model_name, device=device, top_k=None, truncation=True)
        self.batch_size, self.metrics = batch_size, {"kind": "hub_classifier", "model": model_name}

    def __call__(self, texts: list[str]) -> list[float]:
        outputs = self.pipe(list(texts), batch_size=self.batch_size)
        # top_k=None returns every label's score per text; POSITIVE is the reward.
        return [next(s["score"] for s in scores if s["label"].upper().startswith("POS")) for scores in outputs]


def load(out_dir: Path, reward_model_name: str | None):
    if reward_model_name is None:
        return TfidfReward(out_dir)
    reward = PipelineReward(reward_model_name)
    (Path(out_dir) / "metrics.json").write_text(json.dumps(reward.metrics, indent=2))
    return reward
