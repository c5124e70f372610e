"""Does CTR's knowledge sharing help a task that repeats an earlier one with few samples?

On the test suite's tiny templated sentiment data (a random 2-layer BERT, no download;
``tests/_text_helpers.py``): task 0 is "books" with 128 training sentences, task 1 is
"books" again with ``--n-few`` sentences; both are tested on held-out sentences. CTR and
its ablation without KSM (c) run paired (same seed, same random numbers outside the KSM);
the script prints, per seed, both tasks' accuracies for both systems and the mean
difference CTR − (c) on task 1. It also reads task 1's test sentences through task 1's
CL-plugins (its masks, and with CTR its routing) but task 0's head: whether what task 0
learned reaches task 1's representation, apart from the new head learned from few
samples; and through task 0's head over the frozen encoder alone (every CL-plugin off),
which says how much of task 0's knowledge needed the CL-plugins at all. Example::

    python benchmarks/ctr_repeat_probe.py --n-few 16 --epochs 30 --seeds 0,1,2,3 \
        [--gate-bias 4] [--mask-init-mean -1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _text_helpers import LENGTH, make_tokenizer, task_data, tiny_bert  # noqa: E402
from avalanche.evaluation.metrics import accuracy_metrics  # noqa: E402
from avalanche.training.plugins import EvaluationPlugin  # noqa: E402

from avalanche_ctr.benchmarks import text_benchmark  # noqa: E402
from avalanche_ctr.models import CTRModel  # noqa: E402
from avalanche_ctr.text_encoder import pool_hidden, split_text_inputs  # noqa: E402
from avalanche_ctr.training import CTR  # noqa: E402


def samples(experience) -> tuple[torch.Tensor, torch.Tensor]:
    dataset = experience.dataset.eval()
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    return x, torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def accuracy(model: CTRModel, experience, task: int, head: int | None = None) -> float:
    """Accuracy on ``experience`` through task ``task``'s CL-plugins and task ``head``'s
    head (default: its own)."""
    x, y = samples(experience)
    heads = model.classifier.classifiers
    own = heads[str(task)]
    model.eval()
    try:
        heads[str(task)] = heads[str(task if head is None else head)]
        with torch.no_grad():
            return float((model(x, task).argmax(dim=1) == y).float().mean())
    finally:
        heads[str(task)] = own


def frozen_accuracy(model: CTRModel, experience, head: int) -> float:
    """Accuracy on ``experience`` of task ``head``'s head over the frozen encoder alone
    (no task: every CL-plugin passes its input through, as for a task never trained)."""
    x, y = samples(experience)
    input_ids, attention_mask, token_type_ids = split_text_inputs(x, "CTRModel")
    model.eval()
    task = model.context.task
    model.context.task = None
    try:
        with torch.no_grad():
            hidden = model.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            logits = model.classifier.classifiers[str(head)](
                pool_hidden(hidden, attention_mask, model.pooling)
            )
    finally:
        model.context.task = task
    return float((logits.argmax(dim=1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-few", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--hat-lr", type=float, default=0.05)
    parser.add_argument("--ksm-init", default="zero")
    parser.add_argument("--gate-bias", type=float, default=0.0)
    parser.add_argument("--mask-init-mean", type=float, default=0.0)
    parser.add_argument("--seeds", default="0,1,2,3")
    args = parser.parse_args()
    torch.set_num_threads(1)
    tokenizer = make_tokenizer(Path(tempfile.mkdtemp()))
    train = [task_data("books", 128, seed=0), task_data("books", args.n_few, seed=1)]
    test = [task_data("books", 40, seed=100), task_data("books", 80, seed=101)]
    stream = text_benchmark(train, test, tokenizer=tokenizer, max_length=LENGTH)
    differences = []
    for seed in [int(s) for s in args.seeds.split(",")]:
        result = {}
        for sharing in (True, False):
            torch.manual_seed(seed)
            extra = {"ksm_init": args.ksm_init, "gate_bias": args.gate_bias} if sharing else {}
            model = CTRModel(
                tiny_bert(tokenizer),
                bottleneck=32,
                capsule_hidden=8,
                routing_channels=8,
                knowledge_sharing=sharing,
                mask_init_mean=args.mask_init_mean,
                **extra,
            )
            torch.manual_seed(seed)
            strategy = CTR(
                model=model,
                optimizer=torch.optim.Adam(model.parameters(), lr=args.lr),
                train_mb_size=8,
                train_epochs=args.epochs,
                hat_lr=args.hat_lr,
                evaluator=EvaluationPlugin(accuracy_metrics(experience=True), loggers=[]),
            )
            for experience in stream.train_stream:
                strategy.train(experience)
            test = stream.test_stream
            result[sharing] = [100 * accuracy(model, test[t], t) for t in (0, 1)]
            result[sharing].append(100 * accuracy(model, test[1], 1, head=0))
            result[sharing].append(100 * frozen_accuracy(model, test[1], head=0))
        differences.append(result[True][1] - result[False][1])
        print(
            f"seed {seed}: CTR tasks 0/1 {result[True][0]:.1f} / {result[True][1]:.1f} %, "
            f"(c) {result[False][0]:.1f} / {result[False][1]:.1f} %, task 1 CTR − (c) "
            f"{differences[-1]:+.1f} pts; task 1 read by task 0's head: CTR "
            f"{result[True][2]:.1f} %, (c) {result[False][2]:.1f} %; by task 0's head over "
            f"the frozen encoder alone: {result[True][3]:.1f} % / {result[False][3]:.1f} %",
            flush=True,
        )
    print(f"mean task-1 difference CTR − (c): {statistics.fmean(differences):+.2f} pts")


if __name__ == "__main__":
    main()
