"""μP: the coordinate check's slopes, SP left exactly as it was, and which parameters get which lr scale.

    pytest tests/trainer/test_mup.py
"""
from __future__ import annotations

import pytest
import torch

from trainer.config import ConfigError, ModelConfig, build_config
from trainer.coord_check import coord_check, slopes
from trainer.loop import make_optimizer
from trainer.model import GPT
from trainer.mup import attention_scale, readout_multiplier


def test_coordinate_check_is_flat_under_mup_and_grows_under_sp():
    sp, mup = slopes(coord_check("sp")), slopes(coord_check("mup"))
    assert all(abs(s) < 0.25 for s in mup.values()), mup  # every activation width-independent under μP
    assert sp["logits"] > 0.75 and all(sp[k] > 1.0 for k in sp if k.startswith("block")), sp
    assert sp["logits"] - mup["logits"] > 0.75


def test_sp_ignores_base_width_and_equals_the_default_bit_for_bit(smoke_trainer):
    """Training with the new fields spelled out (sp, any base_width) gives the default's losses exactly: the SP
    path never reads them. (Against the code before μP: identical losses, val_loss and samples, checked once.)"""
    runs = [smoke_trainer(), smoke_trainer(**{"model.parametrization": "sp", "model.base_width": 7})]
    losses = [[t.train_step() for _ in range(6)] for t in runs]
    assert losses[0] == losses[1]
    assert runs[0].evaluate() == runs[1].evaluate()
    assert [len(g["params"]) for g in runs[0].optimizer.param_groups] == [5, 11]  # decay / no-decay, as before
    assert all(g["lr_scale"] == 1.0 for g in runs[0].optimizer.param_groups)


def test_mup_at_the_base_width_is_sp(smoke_trainer):
    sp = smoke_trainer()
    mup = smoke_trainer(**{"model.parametrization": "mup", "model.base_width": sp.cfg.model.d_model})
    for a, b in zip(sp.model.state_dict().values(), mup.model.state_dict().values()):
        assert torch.equal(a, b)
    for _ in range(4):
        assert sp.train_step() == pytest.approx(mup.train_step(), rel=1e-5)


def test_mup_lr_groups_scale_only_the_hidden_matrices():
    cfg = ModelConfig(n_layers=2, n_heads=2, d_model=64, context_length=8, vocab_size=50, dropout=0.0,
                      parametrization="mup", base_width=16)
    model = GPT(cfg)
    optimizer = make_optimizer(model, build_config("smoke").optim, torch.device("cpu"))
    names = {id(p): n for n, p in model.named_parameters()}
    scale_of = {names[id(p)]: g["lr_scale"] for g in optimizer.param_groups for p in g["params"]}
    hidden = {n for n in scale_of if n.endswith(("qkv.weight", "proj.weight", "fc.weight"))}
    assert len(hidden) == 8 and all(scale_of[n] == 16 / 64 for n in hidden)
    assert all(scale_of[n] == 1.0 for n in set(scale_of) - hidden)  # embeddings, biases, LayerNorms
    assert scale_of["tok_emb.weight"] == 1.0 and scale_of["pos_emb.weight"] == 1.0
    decay = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert decay == hidden | {"tok_emb.weight"}
    assert readout_multiplier(cfg) == 0.25 and attention_scale(cfg) == pytest.approx(8 ** 0.5 / 32)
    assert model.blocks[0].mlp.fc.weight.std().item() == pytest.approx(0.02 / 2, rel=0.1)  # 0.02/sqrt(4)


def test_mup_readout_multiplier_reaches_every_use_of_the_logits():
    cfg = ModelConfig(n_layers=1, n_heads=2, d_model=32, context_length=8, vocab_size=40, dropout=0.0,
                      parametrization="mup", base_width=8)
    model = GPT(cfg).eval()
    ids = torch.randint(40, (2, 8), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        plain = model.lm_head(model.hidden_states(ids)) / 4  # h·Eᵀ / width_mult
        logits, loss = model(ids, ids)
        _, fused = model(ids, ids, return_logits=False)
        eval_loss, hits = model.loss_and_hits(ids, ids)
    torch.testing.assert_close(logits, plain)
    expected = torch.nn.functional.cross_entropy(plain.flatten(0, 1), ids.flatten())
    for value in (loss, fused, eval_loss):
        torch.testing.assert_close(value, expected)
    assert torch.equal(hits, plain.argmax(-1) == ids)
    greedy = model.generate(ids[:, :4], 1, temperature=0)
    assert torch.equal(greedy[:, -1], (model.lm_head(model.hidden_states(ids[:, :4])[:, -1]) / 4).argmax(-1))


@pytest.mark.parametrize("key, value, fragment", [("model.parametrization", "ntk", "use sp or mup"),
                                                  ("model.base_width", "0", "base_width=0 must be > 0")])
def test_bad_parametrization_settings_are_one_line_errors(key, value, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_config("smoke", {key: value})
