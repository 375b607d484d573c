"""pytest tests/test_bpb.py — bits per byte (val_bpb, the bpb floors), progress reports, the bf16-emulation warning.

Bits per byte = total NLL in nats / (ln 2 × UTF-8 bytes of the text the predicted tokens stand for).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trainer import precision
from trainer.floors import loss_floors
from trainer.tokenizer import TextTokenizer, load_tokenizer, train_bpe

TEXT = ("Café crème, naïve façade — 東京 and Zürich: 3 × 4 = 12 🙂. " * 3).strip()


def test_token_bytes_sum_to_the_utf8_length_of_any_text_and_eos_stands_for_none():
    tokenizer = TextTokenizer(train_bpe([TEXT, "plain ascii words here"] * 20, 300), "bpe:300")
    lengths = tokenizer.token_bytes()
    for text in (TEXT, "ascii only", "東京 🙂", "é" * 7):
        assert lengths[tokenizer.encode(text)].sum() == len(text.encode("utf-8"))
    assert lengths[tokenizer.eos_id] == 0


def test_gpt2_token_bytes_are_exact_too(shared_data):
    tokenizer = load_tokenizer("gpt2")
    ids = tokenizer.encode(TEXT + "<|endoftext|>")
    assert ids[-1] == tokenizer.eos_id
    assert tokenizer.token_bytes()[ids].sum() == len(TEXT.encode("utf-8"))


def test_val_bpb_is_total_nll_over_ln2_times_the_bytes_of_the_evaluated_targets(smoke_trainer):
    trainer = smoke_trainer(**{"train.eval_batches": 3})
    for _ in range(3):
        trainer.train_step()
    metrics = trainer.evaluate()
    # By hand: the full logits' summed cross-entropy, and the bytes of each target row's decoded text (the
    # tiny corpus is ASCII, so a row's text is exactly its bytes; EOS stands for no text).
    nll, n_bytes, backend = 0.0, 0, trainer.tokenizer._backend
    trainer.model.eval()
    with torch.no_grad():
        for x, y in trainer.val:
            logits, _ = trainer.model(x)
            nll += F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="sum").item()
            n_bytes += sum(len(backend.decode(row.tolist(), skip_special_tokens=True).encode()) for row in y)
    assert len(trainer.val) == 3 and trainer.val_bytes == n_bytes
    assert metrics["val_bpb"] == pytest.approx(nll / (math.log(2) * n_bytes), rel=1e-4)
    assert metrics["val_loss"] == pytest.approx(nll / sum(y.numel() for _, y in trainer.val), rel=1e-4)


def test_fewer_eval_batches_count_only_their_own_bytes(smoke_trainer):
    one, two = smoke_trainer(**{"train.eval_batches": 1}), smoke_trainer(**{"train.eval_batches": 2})
    assert len(one.val) == 1 and 0 < one.val_bytes < two.val_bytes


def test_bpb_floors_convert_each_floor_by_the_bytes_of_the_validation_targets():
    train, val, vocab = np.array([0, 1, 0, 1, 0, 2]), np.array([0, 1, 1, 2]), 3
    token_bytes = np.array([1, 3, 0])  # token 2 is an EOS: no text
    floors = loss_floors(train, val, vocab, token_bytes)
    targets_bytes = 3 + 3 + 0  # val[1:] = 1, 1, 2
    for name in ("floor_uniform", "floor_unigram", "floor_bigram"):
        assert floors[f"{name}_bpb"] == pytest.approx(floors[name] * 3 / (math.log(2) * targets_bytes))
    assert "floor_bigram_bpb" not in loss_floors(train, val, vocab)  # no bytes, no bpb


def test_the_real_bigram_is_2_10_bits_per_byte_as_the_data_readme_says(shared_data):
    from trainer.config import build_config
    from trainer.data import prepare_corpus

    cfg = build_config("cpu", {"data.source": "wikitext-2", "data.tokenizer": "gpt2"})
    corpus, tokenizer = prepare_corpus(cfg.data, cfg.model.context_length)
    floors = loss_floors(corpus.train, corpus.val, corpus.vocab_size, tokenizer.token_bytes())
    assert floors["floor_bigram_bpb"] == pytest.approx(2.10, abs=0.005)


def test_progress_reports_come_between_evals_only_and_carry_no_validation(smoke_trainer):
    trainer, evals, progress = smoke_trainer(), [], []
    trainer.run(on_eval=lambda r: evals.append(r.metrics["step"]), on_progress=progress.append, progress_every_s=0)
    assert evals == [4, 8, 12]
    assert [p["step"] for p in progress] == [1, 2, 3, 5, 6, 7, 9, 10, 11]
    assert all(set(p) == {"step", "train_loss", "lr", "tokens_per_s"} for p in progress)


def test_progress_results_do_not_reach_optuna():
    from ray import tune

    from sweeps.engine.searcher import optuna_search

    searcher = optuna_search(seed=0, num_samples=4, storage_url=None, study_name="progress")
    searcher.set_search_properties("val_loss", "min", {"optim.lr": tune.loguniform(1e-4, 1e-2)})
    searcher.suggest("t1")
    searcher.on_trial_result("t1", {"step": 3, "train_loss": 2.0})  # would be a KeyError in OptunaSearch
    searcher.on_trial_result("t1", {"step": 4, "train_loss": 2.0, "val_loss": 1.5})
    assert searcher._ot_study.trials[0].intermediate_values == {4: 1.5}  # the eval only


def test_time_left_counts_finished_trials_as_done():
    from types import SimpleNamespace as Trial

    from sweeps.engine.progress import time_left_line

    trials = [Trial(status="TERMINATED", last_result={"step": 25}), Trial(status="RUNNING", last_result={"step": 50})]
    assert time_left_line(trials, 3, 100, 60.0) == "elapsed 1m00s, about 1m00s left (50% of the trials' steps done)"
    assert "after the first progress" in time_left_line([], 3, 100, 5.0)


@pytest.mark.parametrize("requested, native, device, warns", [
    ("bf16", False, "cpu", True), ("bf16", True, "cpu", False), ("auto", False, "cpu", False),
    ("fp32", False, "cpu", False), ("bf16", False, "cuda", False)])
def test_bf16_emulation_warning_only_for_an_explicit_bf16_on_a_cpu_without_it(monkeypatch, requested, native,
                                                                               device, warns):
    monkeypatch.setattr(precision, "native_bf16", lambda d: native if d.type == "cpu" else True)
    message = precision.emulation_warning(requested, torch.device(device))
    assert (message is not None) == warns
    if warns:
        assert "emulat" in message and f"~{precision.EMULATED_BF16_SLOWDOWN:.0f}x slower" in message


def test_the_trainer_prints_the_warning_once(smoke_trainer, monkeypatch, capsys):
    monkeypatch.setattr(precision, "native_bf16", lambda d: False)
    smoke_trainer(**{"train.precision": "bf16"})
    smoke_trainer(**{"train.precision": "auto"})
    assert capsys.readouterr().err.count("emulates it") == 1
