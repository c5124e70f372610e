import torch
import torch.nn.functional as F
from _helpers import quiet_evaluator

from avalanche_ctr.benchmarks import text_benchmark
from avalanche_ctr.ctr import KnowledgeSharingModule, TaskCapsuleLayer
from avalanche_ctr.ctr.routing import binary_gate


def ksm(n_tasks=3):
    torch.manual_seed(0)
    module = KnowledgeSharingModule(16, capsule_hidden=8, capsule_dim=3, n_transfer=3, channels=4)
    for _ in range(n_tasks):
        module.add_task()
    return module


def test_transfer_starts_at_zero_and_still_learns():
    module = ksm()
    h = torch.randn(2, 7, 16)
    keep = torch.ones(2, 7, dtype=torch.bool)
    transfer, _ = module(h, keep, 2, 1.0)
    assert torch.equal(transfer, torch.zeros_like(transfer))
    (transfer - torch.randn_like(transfer)).pow(2).sum().backward()
    assert module.project.weight.grad.abs().sum() > 0  # the projection learns at once
    assert module.attentions[2].weight.grad.abs().sum() == 0  # the rest once it is not zero


def test_similarity_features_equal_the_papers_convolutions():
    """Composed kernels over capsules, as one product, equal the paper's formulation: the
    pre-route vectors of every source, one convolution per kernel size, ReLU, max over the
    kept tokens."""
    module = ksm()
    capsules = torch.randn(5, 11, 3, 3)
    routes = torch.stack(list(module.route_weights))
    keep = torch.rand(5, 11) > 0.3
    keep[:, 0] = True
    extra = torch.randn(5, 4)
    priors = module.pre_route(capsules, routes) * keep[:, :, None, None]
    expected = []
    for source in range(3):
        x = priors[:, :, source].transpose(1, 2)
        pooled = []
        for conv in module.convs_source:
            y = F.relu(conv(x)[..., : x.shape[-1]] + extra[..., None])
            pooled.append(y.masked_fill(~keep[:, None], float("-inf")).max(dim=-1).values)
        expected.append(torch.cat(pooled, dim=1))
    features = module.similarity_features(module.convs_source, capsules, routes, keep, extra)
    assert torch.allclose(features, torch.stack(expected, dim=1), atol=1e-5)


def test_no_padding_mask_routes_as_a_mask_that_keeps_every_token():
    module = ksm()
    with torch.no_grad():
        module.project.weight.normal_()  # a transfer that is not zero
    h = torch.randn(4, 9, 16)
    everything = torch.ones(4, 9, dtype=torch.bool)
    for s in (None, 1.0):  # test-time masks, argmax gates; training masks, Gumbel gates
        module.train(s is not None)
        outputs = [
            module(h, keep, 2, s, torch.Generator().manual_seed(3)) for keep in (None, everything)
        ]
        assert not torch.equal(outputs[0][0], torch.zeros_like(outputs[0][0]))
        assert torch.allclose(outputs[0][0], outputs[1][0], atol=1e-6)
        assert torch.equal(outputs[0][1], outputs[1][1])  # the same gates


def test_gumbel_gates_follow_the_given_generator_only():
    logits = torch.randn(64, 2)
    global_state = torch.get_rng_state()
    draws = []
    for _ in range(2):
        generator = torch.Generator().manual_seed(7)
        draws.append(binary_gate(logits, training=True, generator=generator))
    assert torch.equal(draws[0], draws[1])
    assert torch.equal(torch.get_rng_state(), global_state)  # nothing drawn globally
    assert set(draws[0].unique().tolist()) <= {0.0, 1.0}
    assert 0 < draws[0].mean() < 1
    evaluation = binary_gate(logits, training=False)
    assert torch.equal(evaluation, (logits[:, 0] > logits[:, 1]).float())


def test_free_entries_freeze_exactly_what_an_earlier_task_reads():
    """Change every free entry of the shared routing at random: task 0's transfer output,
    computed with its binary test-time masks, stays bit-identical; changing a frozen
    entry changes it."""
    module = ksm(n_tasks=2)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()
    module.eval()
    for mask in module.masks:
        mask.begin_task(0, new=True)
        mask.finish_task(0)
        mask.begin_task(1, new=True)
    h = torch.randn(3, 9, 16)
    keep = torch.ones(3, 9, dtype=torch.bool)
    before, _ = module(h, keep, 0, None)
    pairs = module.free_entries()
    assert any((~free).any() for _, free in pairs) and any(free.any() for _, free in pairs)
    with torch.no_grad():
        for param, free in pairs:
            param.add_(torch.randn_like(param) * free)
        for gate in (module.gates[1], module.attentions[1]):
            gate.weight.normal_()
    after, _ = module(h, keep, 0, None)
    assert torch.equal(after, before)
    with torch.no_grad():
        for param, free in pairs:
            param.add_(torch.randn_like(param) * ~free.expand_as(param))
    assert not torch.equal(module(h, keep, 0, None)[0], before)


def test_batched_capsules_equal_one_capsule_at_a_time():
    torch.manual_seed(0)
    layer = TaskCapsuleLayer(hidden_size=16, capsule_hidden=8, capsule_dim=3)
    for _ in range(4):
        layer.add_task(torch.device("cpu"))
    h = torch.randn(2, 5, 16)
    from avalanche_ctr.ctr.capsules import squash

    expected = torch.stack([squash(c(h)) for c in layer.capsules[:3]], dim=2)
    assert torch.allclose(layer(h, 3), expected, atol=1e-6)
    for index in (0, 2):  # frozen and trained capsules interleaved
        layer.capsules[index].requires_grad_(False)
    h.requires_grad_(True)
    expected = torch.stack([squash(c(h)) for c in layer.capsules], dim=2)
    out = layer(h, 4)
    assert torch.allclose(out, expected, atol=1e-6)
    out.sum().backward()
    assert [c.fc1.weight.grad is not None for c in layer.capsules] == [False, True, False, True]
    assert h.grad is not None and h.grad.abs().sum() > 0


def test_squash_backward_is_the_gradient_of_squash():
    from avalanche_ctr.ctr.capsules import squash, squash_backward

    torch.manual_seed(0)
    norms = torch.tensor([1e-3, 0.5, 1.0, 30.0], dtype=torch.float64)
    x = torch.randn(4, 3, 7, dtype=torch.float64) * norms[:, None, None]
    grad = torch.randn_like(x)
    x.requires_grad_(True)
    (expected,) = torch.autograd.grad(squash(x, dim=1), x, grad)
    assert torch.allclose(squash_backward(grad, x.detach(), dim=1), expected, rtol=1e-10)


def test_ctr_outputs_do_not_depend_on_padding(tokenizer):
    from _text_helpers import task_data, tiny_ctr_model

    from avalanche_ctr.training import CTR

    data = [task_data("books", 32, seed=0)]
    short = text_benchmark(data, data, tokenizer=tokenizer, max_length=8)
    padded = text_benchmark(data, data, tokenizer=tokenizer, max_length=16)
    model = tiny_ctr_model(tokenizer)
    strategy = CTR(
        model=model,
        optimizer=torch.optim.Adam(model.parameters(), lr=0.01),
        train_mb_size=8,
        train_epochs=2,
        evaluator=quiet_evaluator(),
    )
    strategy.train(short.train_stream[0])
    for plugin in model.plugins:  # make the transfer path matter
        torch.nn.init.normal_(plugin.ksm.project.weight)
    model.eval()
    x_short = torch.stack([short.test_stream[0].dataset[i][0] for i in range(32)])
    x_padded = torch.stack([padded.test_stream[0].dataset[i][0] for i in range(32)])
    assert x_padded.shape[-1] > x_short.shape[-1]
    with torch.no_grad():
        assert torch.allclose(model(x_short, 0), model(x_padded, 0), atol=1e-5)
        # a padded row next to a long row is not cut: the routing must ignore its padding
        mixed = x_padded.clone()
        mixed[0, :, -1] = torch.tensor([tokenizer.sep_token_id, 1, 0])
        assert torch.allclose(model(mixed[1:2], 0), model(x_padded[1:2], 0), atol=1e-5)
        assert torch.allclose(model(mixed, 0)[1:], model(x_padded, 0)[1:], atol=1e-5)


def test_gate_bias_starts_sources_on_and_keeps_every_other_draw():
    def module(gate_bias):
        torch.manual_seed(0)
        m = KnowledgeSharingModule(16, 8, 3, 3, channels=4, gate_bias=gate_bias)
        for _ in range(2):
            m.add_task()
        return m

    plain, biased = module(0.0), module(6.0)
    for name, value in plain.state_dict().items():
        if not name.startswith("gates.") or not name.endswith("bias"):
            assert torch.equal(value, biased.state_dict()[name]), name  # runs stay paired
    shift = biased.gates[1].bias - plain.gates[1].bias
    assert torch.allclose(shift, torch.tensor([3.0, -3.0]))
    h, keep = torch.randn(64, 7, 16), torch.ones(64, 7, dtype=torch.bool)
    biased.eval()
    _, gates = biased(h, keep, 1, None)
    assert gates.float().mean() > 0.9  # on at evaluation, where plain gates are arbitrary
    biased.train()
    _, gates = biased(h, keep, 1, 1.0, torch.Generator().manual_seed(0))
    assert gates.float().mean() > 0.9  # and in training, Gumbel noise and all
