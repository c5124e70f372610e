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


def tiny_bert(tokenizer) -> BertModel:
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(tokenizer.get_vocab()),
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=LENGTH,
    )
    return BertModel(config)


def tiny_ctr_model(tokenizer) -> CTRModel:
    return CTRModel(tiny_bert(tokenizer), bottleneck=32, capsule_hidden=8, routing_channels=8)


def make_tokenizer(folder: Path) -> BertTokenizerFast:
    """A WordPiece tokenizer over the words of the templated sentences."""
    vocab = SPECIALS + POSITIVE + NEGATIVE + FILLERS + sum(DOMAINS.values(), [])
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))
