"""pytest tests/trainer/test_loop.py — the pre-training loop: schedule, decay groups, learning, determinism, resume,
progress reports, the optimizer."""
import io
import math

import pytest
import torch

from trainer.config import ModelConfig, OptimConfig, build_config, with_vocab_size
from trainer.loop import DIVERGED_LOSS, lr_at, make_optimizer
from trainer.model import GPT


def test_warmup_starts_above_zero_and_cosine_ends_at_min_lr():
    optim = OptimConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=10)
    assert lr_at(0, optim, 100) == pytest.approx(1e-4)  # lr/warmup, not 0
    assert lr_at(9, optim, 100) == pytest.approx(1e-3)  # the last warmup step reaches the peak
    assert lr_at(10, optim, 100) == pytest.approx(1e-3)
    assert lr_at(55, optim, 100) == pytest.approx((1e-3 + 1e-4) / 2)  # cosine midpoint
    assert lr_at(100, optim, 100) == pytest.approx(1e-4)
    assert lr_at(500, optim, 100) == pytest.approx(1e-4)  # past the end stays at the floor
    after_warmup = [lr_at(s, optim, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(after_warmup, after_warmup[1:]))


def test_no_warmup_and_warmup_equal_to_the_run_are_both_well_defined():
    assert lr_at(0, OptimConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=0), 50) == pytest.approx(1e-3)
    full = OptimConfig(lr=1e-3, min_lr_ratio=0.1, warmup_steps=50)
    assert [lr_at(s, full, 50) for s in (0, 49)] == pytest.approx([2e-5, 1e-3])


def test_weight_decay_applies_to_matrices_but_not_biases_norms_or_positions():
    cfg = build_config("smoke")
    model = GPT(cfg.model)
    decay, no_decay = make_optimizer(model, cfg.optim, torch.device("cpu")).param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    kept = {names[id(p)] for p in no_decay["params"]}
    assert decay["weight_decay"] == cfg.optim.weight_decay and no_decay["weight_decay"] == 0
    assert decayed | kept == set(names.values()) and not decayed & kept
    assert "tok_emb.weight" in decayed and "blocks.0.attn.qkv.weight" in decayed
    assert "pos_emb.weight" in kept and "ln_f.weight" in kept and "blocks.0.mlp.fc.bias" in kept



def test_loss_falls_well_below_the_uniform_level(smoke_trainer):
    trainer = smoke_trainer(**{"train.max_steps": 60, "train.eval_every": 20, "optim.lr": 1e-2})
    untrained = trainer.evaluate()["val_loss"]
    assert untrained == pytest.approx(math.log(trainer.corpus.vocab_size), abs=0.3)
    records = []
    trainer.run(on_eval=records.append)
    assert [r.metrics["step"] for r in records] == [20, 40, 60]
    last = records[-1].metrics["val_loss"]
    assert last < untrained - 1.0 and last <= records[0].metrics["val_loss"]
    assert last == pytest.approx(math.log(records[-1].metrics["val_ppl"]))
    assert 0 < records[-1].metrics["val_acc"] <= 1 and records[-1].metrics["tokens_per_s"] > 0
    assert all(r.metrics["eval_s"] > 0 for r in records)
    assert len(records[-1].samples) == 3 and all(isinstance(s, str) and s for s in records[-1].samples)


def test_same_seed_same_losses_on_cpu(smoke_trainer):
    runs = [smoke_trainer(**{"train.precision": "fp32"}) for _ in range(2)]
    assert [r.run().metrics["val_loss"] for r in runs][0] == runs[1].history[-1]["val_loss"]


def test_a_resumed_run_continues_exactly_where_it_stopped(smoke_trainer):
    settings = {"train.precision": "fp32", "model.dropout": 0.1}  # dropout: the RNG state must resume too
    straight = smoke_trainer(**settings)
    straight.run()

    class Killed(Exception):
        pass

    checkpoint = io.BytesIO()

    def checkpoint_then_die_at_step_8(record):
        # Like the Tune trainable: the state (global RNG included) is saved inside the eval callback.
        checkpoint.seek(0)
        checkpoint.truncate()
        torch.save(interrupted.state_dict(), checkpoint)
        if record.metrics["step"] == 8:
            raise Killed

    interrupted = smoke_trainer(**settings)
    with pytest.raises(Killed):
        interrupted.run(on_eval=checkpoint_then_die_at_step_8)
    resumed = smoke_trainer(**settings)
    checkpoint.seek(0)
    resumed.load_state_dict(torch.load(checkpoint, weights_only=True))  # tensors and plain data only
    resumed.run()
    assert resumed.step == straight.step == 12
    assert [h["step"] for h in resumed.history] == [4, 8, 12]
    assert resumed.history[-1]["val_loss"] == straight.history[-1]["val_loss"]
    for a, b in zip(resumed.model.parameters(), straight.model.parameters()):
        assert torch.equal(a, b)


def test_a_run_loaded_at_its_end_reports_that_end_again_without_training(smoke_trainer):
    """A crash between saving the last checkpoint and Tune taking its report restarts the trial at its end: the
    end (finished, or diverged) must be reported again, so the trial's last result is not an older one."""
    for settings in ({"train.precision": "fp32"},
                     {"optim.lr": 1e4, "optim.grad_clip": 0, "optim.warmup_steps": 0, "train.precision": "fp32"}):
        ended = smoke_trainer(**settings)
        ended.run()
        restarted = smoke_trainer(**settings)
        restarted.load_state_dict(ended.state_dict())
        records = []
        record = restarted.run(on_eval=records.append)
        assert [r.metrics for r in records] == [record.metrics] == [ended.history[-1]]
        assert restarted.step == ended.step and len(restarted.history) == len(ended.history)


def test_a_diverging_run_stops_and_reports_a_finite_worst_loss(smoke_trainer):
    trainer = smoke_trainer(**{"optim.lr": 1e4, "optim.grad_clip": 0, "optim.warmup_steps": 0,
                           "train.max_steps": 50, "train.precision": "fp32"})
    record = trainer.run()
    assert record.metrics["diverged"] == 1.0
    assert record.metrics["val_loss"] == DIVERGED_LOSS and math.isfinite(record.metrics["val_ppl"])
    assert trainer.step < 50


def test_every_batch_size_is_validated_on_the_same_tokens(smoke_trainer):
    """A sweep over train.batch_size ranks its trials on one validation set, not on batch_size × eval_batches."""
    small, large = smoke_trainer(**{"train.batch_size": 2}), smoke_trainer(**{"train.batch_size": 8})
    assert [(x.tolist(), y.tolist()) for x, y in small.val] == [(x.tolist(), y.tolist()) for x, y in large.val]


def test_training_steps_and_evaluation_match_the_plain_path(tiny_corpus):
    from trainer.data import prepare_corpus
    from trainer.loop import Pretrainer

    cfg = build_config("smoke", {"data.source": str(tiny_corpus), "data.tokenizer": "bpe:300",
                                 "train.precision": "fp32", "model.dropout": 0.0})
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    cfg = with_vocab_size(cfg, corpus.vocab_size)
    fast, slow = Pretrainer(cfg, corpus, tokenizer), Pretrainer(cfg, corpus, tokenizer)
    model = slow.model
    model.forward = lambda ids, targets=None, return_logits=True: GPT.forward(model, ids, targets, True)
    losses = [(fast.train_step(), slow.train_step()) for _ in range(6)]
    for a, b in losses:
        assert a == pytest.approx(b, rel=1e-5)
    evaluated = fast.evaluate()
    # The plain evaluation: full logits, their argmax.
    model.eval()
    total, correct, count = 0.0, 0, 0
    with torch.no_grad():
        for x, y in fast.val:
            logits, loss = GPT.forward(fast.model, x, y)
            total, correct, count = total + loss.item() * y.numel(), correct + (logits.argmax(-1) == y).sum().item(), \
                count + y.numel()
    assert evaluated["val_loss"] == pytest.approx(total / count, rel=1e-6)
    assert evaluated["val_acc"] == correct / count


def test_progress_reports_come_between_evals_only_and_carry_no_validation(smoke_trainer):
    trainer, evals, progress = smoke_trainer(), [], []
    trainer.run(on_eval=lambda r: evals.append(r.metrics["step"]), on_progress=progress.append, progress_every_s=0)
    assert evals == [4, 8, 12]
    assert [p["step"] for p in progress] == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert all(set(p) == {"step", "train_loss", "lr", "tokens_per_s"} for p in progress)



def test_fused_adamw_matches_foreach():
    cfg = build_config("smoke")
    torch.manual_seed(0)
    model = GPT(ModelConfig(n_layers=2, n_heads=4, d_model=32, context_length=24, dropout=0.0, vocab_size=300))
    optimizer = make_optimizer(model, cfg.optim, torch.device("cpu"))
    assert optimizer.defaults["fused"]
    twin = GPT(model.cfg)
    twin.load_state_dict(model.state_dict())
    names = {id(p): n for n, p in model.named_parameters()}
    twins = dict(twin.named_parameters())
    groups = [{"params": [twins[names[id(p)]] for p in g["params"]], "weight_decay": g["weight_decay"]}
              for g in optimizer.param_groups]
    reference = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas, foreach=True)
    torch.manual_seed(0)
    for _ in range(3):
        for name, p in model.named_parameters():
            p.grad = torch.randn_like(p) * 1e-2
            twins[name].grad = p.grad.clone()
        optimizer.step()
        reference.step()
    for name, p in model.named_parameters():
        assert torch.allclose(p, twins[name], atol=1e-7, rtol=1e-5), name

