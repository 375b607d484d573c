"""pytest tests/trainer/test_model.py — the GPT's structural promises: causality, tying, generation, pooling."""
import pytest
import torch

from trainer.config import ModelConfig
from trainer.model import GPT, GPTClassifier, _filtered_probs


@pytest.fixture
def model():
    torch.manual_seed(0)
    return GPT(ModelConfig(n_layers=2, n_heads=2, d_model=32, context_length=16, dropout=0.0, vocab_size=101)).eval()


def test_logits_shape_and_loss_near_uniform_at_init(model):
    ids, targets = torch.randint(0, 101, (3, 16)), torch.randint(0, 101, (3, 16))
    logits, loss = model(ids, targets)
    assert logits.shape == (3, 16, 101)
    # GPT-2 init gives near-uniform predictions: loss close to log(vocab).
    assert abs(loss.item() - torch.log(torch.tensor(101.0)).item()) < 0.3


def test_changing_a_future_token_never_changes_an_earlier_logit(model):
    ids = torch.randint(0, 101, (1, 16))
    changed = ids.clone()
    changed[0, 9] = (ids[0, 9] + 1) % 101
    before, _ = model(ids)
    after, _ = model(changed)
    assert torch.equal(before[0, :9], after[0, :9])
    assert not torch.allclose(before[0, 9:], after[0, 9:])


def test_input_and_output_embeddings_are_one_tensor(model):
    with torch.no_grad():
        model.tok_emb.weight[7] = 0.0  # the token's input row: its output logit, read through the same row, is 0
        logits, _ = model(torch.randint(0, 101, (2, 16)))
    assert torch.equal(logits[..., 7], torch.zeros(2, 16)) and logits[..., 8].abs().sum() > 0
    every_use = sum(p.numel() for _, p in model.named_parameters(remove_duplicate=False))
    assert model.num_parameters() == every_use - 101 * 32  # the shared matrix counted once


def test_residual_projections_get_the_smaller_gpt2_init():
    torch.manual_seed(0)
    big = GPT(ModelConfig(n_layers=8, n_heads=4, d_model=256, context_length=8, vocab_size=50))
    assert big.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02, rel=0.05)
    assert big.blocks[0].mlp.proj.weight.std().item() == pytest.approx(0.02 / 4, rel=0.05)


def test_sequences_longer_than_the_context_are_refused(model):
    with pytest.raises(ValueError, match="context_length"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_generate_appends_tokens_and_greedy_is_deterministic(model):
    prompt = torch.tensor([[1, 2, 3]])
    out = model.generate(prompt, max_new_tokens=20, temperature=0)  # runs past context: window slides
    assert out.shape == (1, 23) and torch.equal(out[:, :3], prompt)
    assert torch.equal(out, model.generate(prompt, max_new_tokens=20, temperature=0))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    s1 = model.generate(prompt, 10, temperature=1.0, top_k=5, generator=g1)
    s2 = model.generate(prompt, 10, temperature=1.0, top_k=5, generator=g2)
    assert torch.equal(s1, s2) and s1.max() < 101


def test_top_k_and_top_p_keep_only_the_likely_tokens():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.count_nonzero(_filtered_probs(logits, top_k=2, top_p=None)) == 2
    nucleus = _filtered_probs(logits, top_k=None, top_p=0.7)  # 0.5 < 0.7, 0.5 + 0.3 reaches it: two tokens
    assert torch.count_nonzero(nucleus) == 2 and nucleus.sum().item() == pytest.approx(1.0)
    assert torch.count_nonzero(_filtered_probs(logits, top_k=None, top_p=0.01)) == 1


def test_classifier_pools_the_last_real_token_so_padding_changes_nothing(model):
    torch.manual_seed(1)
    clf = GPTClassifier(model, num_classes=4).eval()
    clf.head.weight.data.normal_()  # a non-trivial head, so different pooled states give different logits
    text = torch.tensor([5, 6, 7, 8, 9])
    short = torch.cat([text, torch.full((3,), 100)]).unsqueeze(0)  # padded with token 100 (eos) to 8
    long = torch.cat([text, torch.full((11,), 100)]).unsqueeze(0)  # padded to 16
    lengths = torch.tensor([5])
    assert torch.allclose(clf(short, lengths), clf(long, lengths), atol=1e-5)
    # Pooling position -1 (a pad token) would differ: check the sequences do see different final states.
    assert not torch.allclose(clf(short, torch.tensor([8])), clf(long, torch.tensor([16])), atol=1e-5)


def test_mean_pooling_reads_every_real_token_and_ignores_the_padding(model):
    torch.manual_seed(0)
    clf = GPTClassifier(model, num_classes=4, pooling="mean").eval()
    ids = torch.randint(0, model.cfg.vocab_size, (2, 8))
    lengths = torch.tensor([3, 8])
    repadded = ids.clone()
    repadded[0, 3:] = 0
    with torch.no_grad():
        logits = clf(ids, lengths)
        assert torch.allclose(logits, clf(repadded, lengths), atol=1e-6)
        alone = clf(ids[:1, :3], lengths[:1])
        assert torch.allclose(logits[0], alone[0], atol=1e-6)
        changed = ids.clone()
        changed[0, 0] = (ids[0, 0] + 1) % model.cfg.vocab_size  # an early token reaches the head directly
        assert not torch.allclose(clf(changed, lengths)[0], logits[0])
