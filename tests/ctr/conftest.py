"""A tiny random BERT, its tokenizer and a small sentiment text stream (no download)."""

import random
from dataclasses import dataclass, field

import pytest
import torch
from _helpers import experience_tensors, quiet_evaluator, task_logits
from transformers import BertConfig, BertModel, BertTokenizerFast

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.models import CTRModel
from avalanche_ctr.training import CTR

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


def task_data(domain: str, n: int, seed: int) -> tuple[list[str], list[int]]:
    rng = random.Random(seed)
    labels = [i % 2 for i in range(n)]
    return [sentence(rng, domain, bool(y)) for y in labels], labels


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory) -> BertTokenizerFast:
    vocab = SPECIALS + POSITIVE + NEGATIVE + FILLERS + sum(DOMAINS.values(), [])
    folder = tmp_path_factory.mktemp("tiny_tokenizer")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    return BertTokenizerFast.from_pretrained(str(folder))


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


@pytest.fixture(scope="session")
def sentiment_stream(tokenizer):
    """Three sentiment tasks (books, kitchen, games): 128 training and 40 test sentences each."""
    names = list(DOMAINS)
    train = [task_data(d, 128, seed=i) for i, d in enumerate(names)]
    test = [task_data(d, 40, seed=100 + i) for i, d in enumerate(names)]
    return text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH, task_names=names)


def tiny_ctr_model(tokenizer) -> CTRModel:
    return CTRModel(tiny_bert(tokenizer), bottleneck=32, capsule_hidden=8, routing_channels=8)


@dataclass
class CTRRun:
    strategy: CTR
    results: dict
    logits_after_own_task: list = field(default_factory=list)
    capsule_counts: list = field(default_factory=list)
    tsm_before_last: list = field(default_factory=list)
    cumulative_before_last: list = field(default_factory=list)


@pytest.fixture(scope="session")
def ctr_run(tokenizer, sentiment_stream) -> CTRRun:
    """CTR on the three sentiment tasks, with AdamW's decoupled weight decay so that the
    protection of earlier tasks must hold against an optimizer that moves every weight."""
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.01),
        train_mb_size=16,
        train_epochs=12,
        eval_mb_size=64,
        evaluator=quiet_evaluator(),
    )
    run = CTRRun(strategy=strategy, results={})
    last = len(sentiment_stream.train_stream) - 1
    for i, experience in enumerate(sentiment_stream.train_stream):
        if i == last:
            run.tsm_before_last = [
                [p.detach().clone() for p in (q.tsm.fc1.weight, q.tsm.fc1.bias, q.tsm.fc2.weight)]
                for q in model.plugins
            ]
            run.cumulative_before_last = [
                [m.cumulative.clone() for m in q.tsm.masks] for q in model.plugins
            ]
        strategy.train(experience)
        run.capsule_counts.append(
            [(len(q.task_capsules.capsules), len(q.routings)) for q in model.plugins]
        )
        x, _ = experience_tensors(sentiment_stream.test_stream[i])
        run.logits_after_own_task.append(task_logits(model, x, i))
    run.results = strategy.eval(sentiment_stream.test_stream)
    return run
