"""Which layer of the frozen encoder carries a review's sentiment (issue 13).

For each DSC domain asked for, alone: the frozen encoder's token states of every
layer (0: the embeddings, then each transformer layer) for the domain's training and
dev reviews (``--split test`` for the test reviews), and two readers trained on each
layer's states, scored on the dev (or test) reviews:

* a logistic regression on the mean of the review's token states (a linear probe);
* the dense Kim-CNN of ExSSNeT's text model (:class:`~avalanche_ctr.models.KimCNN`,
  its convolutions and output layer trained with Adam, batch 32).

It prints each layer's accuracy, to choose ``compare --encoder-layer`` on data that
the comparison does not score.

Usage::

    python benchmarks/encoder_layer_probe.py --data-root ../shared/data --domains 0,1,2
"""

from __future__ import annotations

import argparse

import torch
from sklearn.linear_model import LogisticRegression
from torch import Tensor

from avalanche_ctr.benchmarks import DSC
from avalanche_ctr.benchmarks.text import DSC_DOMAINS
from avalanche_ctr.experiments.benchmarks import text_root
from avalanche_ctr.models import KimCNN
from avalanche_ctr.text_encoder import load_encoder, load_tokenizer


def layer_states(encoder: torch.nn.Module, dataset) -> tuple[list[Tensor], Tensor, Tensor]:
    """Every layer's token states (zero at padding), the padding mask and the labels."""
    x = torch.stack([dataset[i][0] for i in range(len(dataset))])
    y = torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])
    real = x[:, 1].bool()
    batches = []
    with torch.no_grad():
        for i in range(0, len(x), 64):
            out = encoder(
                input_ids=x[i : i + 64, 0],
                attention_mask=x[i : i + 64, 1],
                token_type_ids=x[i : i + 64, 2],
                output_hidden_states=True,
            )
            batches.append(out.hidden_states)
    layers = [
        torch.cat([b[k] for b in batches]) * real.unsqueeze(-1) for k in range(len(batches[0]))
    ]
    return layers, real, y


def linear_probe(
    train: Tensor, real: Tensor, y: Tensor, test: Tensor, real_t: Tensor, y_t: Tensor
) -> float:
    """Test accuracy of a logistic regression on mean-pooled token states."""

    def pooled(states: Tensor, mask: Tensor) -> Tensor:
        return states.sum(1) / mask.sum(1, keepdim=True)

    classifier = LogisticRegression(max_iter=3000).fit(pooled(train, real).numpy(), y.numpy())
    return float(classifier.score(pooled(test, real_t).numpy(), y_t.numpy()))


def kim_cnn_probe(
    model: KimCNN,
    train: Tensor,
    y: Tensor,
    test: Tensor,
    y_t: Tensor,
    *,
    lr: float,
    epochs: int,
    seed: int,
) -> float:
    """Test accuracy of ``model``'s dense convolutions and output layer trained on ``train``."""
    generator = torch.Generator().manual_seed(seed)
    params = [*model.convs.parameters(), *model.output.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr)
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), 32):
            rows = order[i : i + 32]
            loss = torch.nn.functional.cross_entropy(model.classify(train[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return float((model.classify(test).argmax(1) == y_t).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--domains", default="0,1,2", help="indices into the paper's DSC order")
    parser.add_argument("--n-train", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--split", choices=("dev", "test"), default="dev")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    encoder = load_encoder(None).eval()
    tokenizer = load_tokenizer(None)
    for index in (int(d) for d in args.domains.split(",")):
        domain = DSC_DOMAINS[index]
        benchmark = DSC(
            text_root(args.data_root, "dsc"),
            domains=[domain],
            n_train=args.n_train,
            n_test=args.n_test,
            tokenizer=tokenizer,
            max_length=args.max_length,
            seed=args.seed,
            dev=True,
        )
        scored = benchmark.dev_stream if args.split == "dev" else benchmark.test_stream
        train, real, y = layer_states(encoder, benchmark.train_stream[0].dataset)
        test, real_t, y_t = layer_states(encoder, scored[0].dataset)
        cells = []
        for layer in range(len(train)):
            probe = linear_probe(train[layer], real, y, test[layer], real_t, y_t)
            torch.manual_seed(args.seed)
            model = KimCNN(encoder, outputs=2, layer=layer)
            kim = kim_cnn_probe(
                model,
                train[layer],
                y,
                test[layer],
                y_t,
                lr=args.lr,
                epochs=args.epochs,
                seed=args.seed,
            )
            cells.append(f"layer {layer}: {100 * probe:.1f} / {100 * kim:.1f}")
        print(
            f"{domain} ({args.split}: linear probe / dense Kim-CNN, %): {' | '.join(cells)}",
            flush=True,
        )


if __name__ == "__main__":
    main()
