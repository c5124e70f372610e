import pytest
import torch
from _text_helpers import DOMAINS, LENGTH, make_tokenizer, task_data

from avalanche_ctr.benchmarks import text_benchmark

# The tests train tiny models: one intra-op thread is as fast, and a second one only
# contends with whatever else runs on the machine (tenfold slow-downs seen on 2 cores).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def tokenizer(tmp_path_factory):
    return make_tokenizer(tmp_path_factory.mktemp("tiny_tokenizer"))


@pytest.fixture(scope="session")
def sentiment_stream(tokenizer):
    """Three sentiment tasks (books, kitchen, games): 128 training and 40 test sentences each."""
    names = list(DOMAINS)
    train = [task_data(d, 128, seed=i) for i, d in enumerate(names)]
    test = [task_data(d, 40, seed=100 + i) for i, d in enumerate(names)]
    return text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH, task_names=names)
