"""pytest tests/sweeps/test_sweeps.py — real Ray Tune sweeps on a toy corpus, tracked in a real SQLite MLflow.

Each sweep uses the smoke preset on a 300-document corpus with a 300-token BPE: seconds per trial. The module's
optuna sweep is read by several tests and changed by none; a test that resumes or grows a sweep runs its own.
"""
from __future__ import annotations

import pytest
import ray
from mlflow.tracking import MlflowClient

from sweeps.engine.launch import run_sweep
from sweeps.engine.plan import Dim
from sweeps.lr_warmup import space as lr_warmup_space
from tests.support import runs_of, sweep_args

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def optuna_sweep(inputs):
    assert run_sweep("lr_warmup", lr_warmup_space, sweep_args(inputs, "optuna4", "--num-samples", "4")) == 0
    return inputs


def test_optuna_asha_sweep_writes_one_parent_and_one_child_per_trial(optuna_sweep):
    client, parents, children = runs_of(optuna_sweep, "optuna4")
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and "best_val_ppl" in parent.data.metrics
    assert {"floor_bigram", "floor_bigram_bpb", "finetune_acc_scratch", "finetune_acc_fewshot_scratch"} <= set(
        parent.data.metrics)
    completed = [c for c in children if c.data.tags["gptsweep.outcome"] == "completed"]
    best = min(completed, key=lambda c: c.data.metrics["val_ppl"])  # the rule: completed trials only
    assert parent.data.tags["gptsweep.best_trial_id"] == best.data.tags["gptsweep.trial_id"]
    for key in ("optim.lr", "optim.warmup_steps"):
        assert parent.data.tags[f"best.{key}"] == best.data.params[key]
    for key in ("val_ppl", "val_loss", "finetune_acc", "finetune_acc_fewshot"):
        assert parent.data.metrics[f"best_{key}"] == pytest.approx(best.data.metrics[key])
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert 1e-3 <= float(child.data.params["optim.lr"]) <= 9e-3  # the smoke preset's 3e-3, ÷ or × 3
        assert "optim.warmup_steps" in child.data.params
        assert "optim.lr" not in child.data.metrics  # params are not duplicated as metrics
        assert {"train_loss", "val_loss", "val_ppl", "val_bpb", "val_acc", "lr", "tokens_per_s", "eval_s"} <= set(
            child.data.metrics)
        history = client.get_metric_history(child.info.run_id, "val_ppl")
        assert len(history) >= 1 and [m.step for m in history] == sorted(m.step for m in history)
        # progress reports between evals (one per step here) are not logged: train_loss only at the evals
        train_steps = [m.step for m in client.get_metric_history(child.info.run_id, "train_loss")]
        assert train_steps == [m.step for m in history] and all(s % 4 == 0 for s in train_steps)
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id)}
        assert {"config.json", "learning_curve.png", "samples"} <= artifacts


def test_completed_trials_carry_finetune_accuracy_and_pruned_ones_are_killed(optuna_sweep):
    _, _, children = runs_of(optuna_sweep, "optuna4")
    outcomes = {c.data.tags["gptsweep.outcome"] for c in children}
    assert outcomes <= {"completed", "pruned"} and "completed" in outcomes
    for child in children:
        if child.data.tags["gptsweep.outcome"] == "completed":
            assert child.info.status == "FINISHED"
            assert 0 <= child.data.metrics["finetune_acc"] <= 1
            assert 0 <= child.data.metrics["finetune_acc_fewshot"] <= 1
            assert "val_ppl" in child.data.metrics  # the last report still carries val_ppl
        else:
            assert child.info.status == "KILLED" and "finetune_acc" not in child.data.metrics


def test_asha_prunes_a_trial_that_is_clearly_worse_at_the_first_rung(inputs):
    # Sequential trials: the good learning rate sets the rung's bar, the hopeless ones fall below it.
    def space(cfg):
        return {"optim.lr": Dim(None, grid=(1e-2, 1e-7, 1e-7)), "optim.warmup_steps": Dim(None, grid=(0,))}

    args = sweep_args(inputs, "prune", "--search", "grid", "--scheduler", "asha", "--max-concurrent", "1")
    assert run_sweep("prune", space, args) == 0
    _, _, children = runs_of(inputs, "prune")
    by_lr = {float(c.data.params["optim.lr"]): c for c in children}
    assert len(children) == 3
    assert by_lr[1e-2].data.tags["gptsweep.outcome"] == "completed"
    pruned = [c for c in children if c.data.tags["gptsweep.outcome"] == "pruned"]
    assert pruned and all(c.info.status == "KILLED" for c in pruned)
    assert all(c.data.metrics["val_loss"] > by_lr[1e-2].data.metrics["val_loss"] for c in pruned)


def test_grid_search_runs_every_cell_of_the_grid(inputs):
    args = sweep_args(inputs, "grid", "--search", "grid", "--finetune-train", "none",
                      "--set", "train.max_steps=20", "--set", "train.eval_every=10")
    assert run_sweep("lr_warmup", lr_warmup_space, args) == 0
    _, _, children = runs_of(inputs, "grid")
    cells = {(float(c.data.params["optim.lr"]), int(c.data.params["optim.warmup_steps"])) for c in children}
    assert len(children) == len(cells) == 3 * 3  # lr 1e-3, 3e-3, 9e-3 × warmups of 0, 1 and 5 steps
    assert all(c.data.tags["gptsweep.outcome"] == "completed" for c in children)


def test_a_sweep_joining_a_two_node_cluster_places_trials_on_both_nodes(inputs):
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 << 20})
    cluster.add_node(num_cpus=1, object_store_memory=200 << 20)
    cluster.wait_for_nodes()
    try:
        args = sweep_args(inputs, "cluster", "--address", cluster.address, "--num-samples", "2",
                          "--scheduler", "fifo", "--max-concurrent", "2", "--finetune-train", "none")
        assert run_sweep("lr_warmup", lr_warmup_space, args) == 0
        _, _, children = runs_of(inputs, "cluster")
        nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
        used = {c.data.tags["gptsweep.node_id"] for c in children}
        assert len(nodes) == 2 and used == nodes  # 1 CPU per node, 2 concurrent trials: one on each
    finally:
        ray.shutdown()
        cluster.shutdown()


def test_optuna_hears_the_truth_and_keeps_its_study_beside_mlflow(optuna_sweep):
    """ASHA-stopped trials are PRUNED with their curve at the real training steps, completed ones COMPLETE with
    their final val_loss; the study is in optuna.db, named after the sweep (every case, whether or not ASHA
    prunes here: tests/sweeps/test_searcher.py)."""
    import optuna

    _, parents, children = runs_of(optuna_sweep, "optuna4")
    study_name = parents[0].data.tags["gptsweep.sweep_path"].rsplit("/", 1)[-1]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{optuna_sweep / 'optuna.db'}")
    assert len(study.trials) == len(children) == 4
    by_lr = {round(t.params["optim.lr"], 12): t for t in study.trials}
    for child in children:
        trial = by_lr[round(float(child.data.params["optim.lr"]), 12)]
        mlflow_steps = [m.step for m in MlflowClient(f"sqlite:///{optuna_sweep / 'mlflow.db'}").get_metric_history(
            child.info.run_id, "val_loss")]
        assert sorted(trial.intermediate_values) == mlflow_steps  # training steps, not Tune iterations
        if child.data.tags["gptsweep.outcome"] == "pruned":
            assert trial.state == optuna.trial.TrialState.PRUNED
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(child.data.metrics["val_loss"])


def test_the_report_reads_importance_from_the_sweeps_own_study(optuna_sweep):
    import optuna

    from analysis.importance import param_importances
    from analysis.runs import fetch_sweep

    sweep = fetch_sweep(f"sqlite:///{optuna_sweep / 'mlflow.db'}", "optuna4")
    assert sweep.study is not None and len(sweep.study.trials) == 4  # the searcher's own study, found again
    study = optuna.create_study()  # one whose completed trials vary both keys: importance must come from it
    for lr, warmup, value in ((1e-3, 0, 5.0), (3e-3, 2, 4.0), (1e-4, 1, 6.0), (2e-3, 3, 4.5)):
        study.add_trial(optuna.trial.create_trial(
            params={"optim.lr": lr, "optim.warmup_steps": warmup}, value=value,
            distributions={"optim.lr": optuna.distributions.FloatDistribution(1e-4, 3e-3, log=True),
                           "optim.warmup_steps": optuna.distributions.IntDistribution(0, 3)}))
    result = param_importances(sweep.trials, sweep.searched, study=study)
    assert "own Optuna study (4 completed trials" in result.note
    assert set(result.values) == {"optim.lr", "optim.warmup_steps"}


def test_grid_repeats_are_repeats_with_their_own_seeds(inputs):
    def space(cfg):
        return {"optim.lr": Dim(None, grid=(3e-3,)), "optim.warmup_steps": Dim(None, grid=(0,))}

    args = sweep_args(inputs, "repeats", "--search", "grid", "--num-samples", "2", "--finetune-train", "none",
                      "--set", "train.max_steps=8", "--set", "train.eval_every=4")
    assert run_sweep("repeats", space, args) == 0
    client, _, children = runs_of(inputs, "repeats")
    assert sorted(int(c.data.params["train.seed"]) for c in children) == [0, 1]
    curves = [[m.value for m in client.get_metric_history(c.info.run_id, "train_loss")] for c in children]
    assert curves[0] != curves[1]


def test_resume_runs_nothing_when_finished_and_grows_the_same_parent_and_study(inputs):
    """A sweep of its own (the module's optuna sweep stays as it was): a plain --resume of the finished sweep
    runs and duplicates nothing; --resume --num-samples 3 adds one trial under the same parent run and study."""
    import optuna

    def histories(client, children) -> dict[str, int]:
        return {c.info.run_id: len(client.get_metric_history(c.info.run_id, "val_loss")) for c in children}

    args = sweep_args(inputs, "grow", "--num-samples", "2", "--scheduler", "fifo",
                      "--set", "train.max_steps=8", "--set", "train.eval_every=4")
    assert run_sweep("lr_warmup", lr_warmup_space, args) == 0
    client, (parent,), before = runs_of(inputs, "grow")
    steps_before = histories(client, before)
    assert run_sweep("lr_warmup", lr_warmup_space, args + ["--resume"]) == 0
    client, parents, after = runs_of(inputs, "grow")
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and parents[0].info.status == "FINISHED"
    # the scratch baseline is computed once per sweep, not again when a finished sweep is resumed
    assert len(client.get_metric_history(parent.info.run_id, "finetune_acc_scratch")) == 1
    assert histories(client, after) == steps_before

    grow = args + ["--resume", "--num-samples", "3"]
    assert run_sweep("lr_warmup", lr_warmup_space, grow) == 0
    client, parents, children = runs_of(inputs, "grow")
    assert [p.info.run_id for p in parents] == [parent.info.run_id] and parents[0].info.status == "FINISHED"
    assert len(children) == 3 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert {k: v for k, v in histories(client, children).items() if k in steps_before} == steps_before
    assert parents[0].data.metrics["trials"] == 3
    best = min(children, key=lambda c: c.data.metrics["val_ppl"])  # over both parts: all three completed (fifo)
    assert parents[0].data.tags["gptsweep.best_trial_id"] == best.data.tags["gptsweep.trial_id"]
    study_name = parent.data.tags["gptsweep.sweep_path"].rsplit("/", 1)[-1]
    study = optuna.load_study(study_name=study_name, storage=f"sqlite:///{inputs / 'optuna.db'}")
    assert len(study.trials) == 3
    assert run_sweep("lr_warmup", lr_warmup_space, grow) == 0  # at 3 already: a plain resume, nothing added
    assert [p.info.run_id for p in runs_of(inputs, "grow")[1]] == [parent.info.run_id]
    assert len(runs_of(inputs, "grow")[2]) == 3
