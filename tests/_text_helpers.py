"""Tiny text helpers shared by the tests: a random BERT, its tokenizer and templated
sentiment sentences (no download). ``tests`` is on pytest's ``pythonpath``."""

import random
from pathlib import Path

import torch
from transformers import BertConfig, BertModel, BertTokenizerFast

from avalanche_ctr.models import CTRModel

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["great", "excellent", "good", "wonderful", "loved", "perfect"]
NEGATIVE = ["awful", "terrible", "bad", "boring", "hated", "broken"]
DOMAINS = {
    "books": ["book", "story", "author", "novel"],
    "kitchen": ["pan", "knife", "blender", "kettle"],
    "games": ["game", "level", "console", "controller"],
}
FILLERS = ["the", "this", "a", "was", "is", "really", "quite", "my", "it", "i", "and"]
LENGTH = 16


def sentence(rng: random.Random, domain: str, positive: bool) -> str:
    noun = rng.choice(DOMAINS[domain])
    opinion = rng.choice(POSITIVE if positive else NEGATIVE)
    words = [rng.choice(FILLERS), noun, opinion]
    rng.shuffle(words)
    return " ".join(words)


def task_data(domain: str, n: int, seed: int, flip: bool = False) -> tuple[list[str], list[int]]:
    """``n`` sentences of ``domain``; with ``flip`` the label is 1 for negative opinions,
    so a model shared with an unflipped task must change to learn it."""
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [sentence(rng, domain, bool(y) != flip) for y in labels], labels


def tiny_bert(tokenizer, dropout: float = 0.1) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=LENGTH,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    return BertModel(config)


def tiny_ctr_model(tokenizer, dropout: float = 0.1) -> CTRModel:
    return CTRModel(
        tiny_bert(tokenizer, dropout), bottleneck=32, capsule_hidden=8, routing_channels=8
    )


def make_tokenizer(folder: Path) -> BertTokenizerFast:
    """A WordPiece tokenizer over the words of the templated sentences."""
    vocab = SPECIALS + POSITIVE + NEGATIVE + FILLERS + sum(DOMAINS.values(), [])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


def write_dsc(root: Path, n_train: int, n_test: int) -> Path:
    """Templated reviews in the DSC layout (``<Domain>_{train,dev,test}.tsv``, labels -1/1)
    for all ten DSC domains, each drawing its nouns from one of :data:`DOMAINS`."""
    from avalanche_ctr.benchmarks import DSC_DOMAINS

    root.mkdir(parents=True, exist_ok=True)
    templates = list(DOMAINS)
    for index, domain in enumerate(DSC_DOMAINS):
        for split, n, seed in (("train", n_train, 0), ("dev", n_test, 1), ("test", n_test, 2)):
            texts, labels = task_data(templates[index % 3], n, seed=100 * index + seed)
            lines = [f"{text}\t{1 if y else -1}" for text, y in zip(texts, labels, strict=True)]
            (root / f"{domain}_{split}.tsv").write_text("\n".join(lines) + "\n")
    return root


def save_tiny_encoder(folder: Path, tokenizer) -> Path:
    """:func:`tiny_bert` and its tokenizer saved as a local model folder."""
    tiny_bert(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_20news(root: Path, n_per_group: int) -> Path:
    """Templated messages in the 20 Newsgroups archive layout (``<group>/<message>``) for
    all 20 newsgroups: in each 20News task its first newsgroup writes positive opinions
    and its second negative ones, about the nouns of one of :data:`DOMAINS`."""
    from avalanche_ctr.benchmarks.text import TWENTY_NEWS_GROUPS

    templates = list(DOMAINS)
    for index, groups in enumerate(TWENTY_NEWS_GROUPS.values()):
        for label, group in enumerate(groups):
            rng = random.Random(10 * index + label)
            folder = root / group
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n_per_group):
                text = sentence(rng, templates[index % 3], positive=label == 0)
                (folder / f"{50000 + k}").write_text(text + "\n", encoding="latin-1")
    return root
