"""The Trainer's distribution settings: chief election, batch convention, checkpoints."""

import json
import os

import pytest

from siamese_tfx.components.contract.config import TrainConfig, TrainerSettings
from siamese_tfx.components.trainer import distribute


def _tf_config(monkeypatch, cluster, task):
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": cluster, "task": task}))


@pytest.mark.parametrize("cluster, task, chief", [
    ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 0}, True),
    ({"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1}, False),
    ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "chief", "index": 0}, True),
    ({"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0}, False),
])
def test_only_one_task_is_chief(monkeypatch, cluster, task, chief):
    _tf_config(monkeypatch, cluster, task)
    assert distribute.is_chief() is chief
    assert distribute.num_workers() == 2


def test_lone_process_is_chief_and_writes_in_place(monkeypatch, tmp_path):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert distribute.is_chief() and distribute.num_workers() == 1
    assert distribute.write_dir(str(tmp_path)) == str(tmp_path)


def test_non_chief_writes_to_a_temporary_directory_it_discards(monkeypatch, tmp_path):
    _tf_config(monkeypatch, {"worker": ["a:1", "b:2"]}, {"type": "worker", "index": 1})
    target = str(tmp_path / "serving_model")
    written = distribute.write_dir(target)
    assert written != target and not written.startswith(str(tmp_path))
    os.makedirs(written)
    distribute.discard(written, target)
    assert not os.path.exists(os.path.dirname(written))


@pytest.mark.parametrize("settings, replicas, expected", [
    ({"batch_size": 64}, 1, 64),
    ({"batch_size": 64}, 4, 64),  # batch_size is the global batch, split across replicas.
    ({"batch_size": 64, "per_replica_batch_size": 32}, 4, 128),  # per-replica x replicas.
    ({"batch_size": 64, "per_replica_batch_size": 0}, 2, 64),
])
def test_global_batch_convention(settings, replicas, expected):
    assert distribute.global_batch_size(TrainConfig(**settings), replicas) == expected


def test_global_batch_must_split_evenly():
    with pytest.raises(ValueError, match="split evenly"):
        distribute.global_batch_size(TrainConfig(batch_size=10), 4)


def test_trainer_settings_reach_run_fn_typed_with_their_defaults():
    # What the pipeline puts in the Trainer's custom_config is what run_fn parses back.
    settings = TrainerSettings(train=TrainConfig(checkpoint_steps=7), seed=3, model_name="m")
    custom_config = json.loads(json.dumps(settings.to_custom_config()))  # as TFX carries it
    assert TrainerSettings.from_custom_config(custom_config) == settings
    assert TrainerSettings.from_custom_config({}).train.checkpoint_steps == 100
    with pytest.raises(ValueError, match="unknown setting.*'checkpoint_step'"):
        TrainerSettings.from_custom_config({"train": {"checkpoint_step": 7}})


def test_non_chief_waits_for_the_chiefs_saved_model(monkeypatch, tmp_path):
    """TFX's Trainer executor fails a task whose serving model dir is missing when run_fn
    returns: a worker returns only once the chief's SavedModel is there."""
    import threading
    import time

    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0})
    serving = tmp_path / "Format-Serving"

    def chief_saves():
        time.sleep(0.5)
        serving.mkdir()
        (serving / "saved_model.pb").write_bytes(b"pb")

    saver = threading.Thread(target=chief_saves)
    started = time.monotonic()
    saver.start()
    distribute.wait_for_chief_export(str(serving), timeout=30, poll_seconds=0.05)
    saver.join()
    assert time.monotonic() - started >= 0.5 and (serving / "saved_model.pb").exists()


def test_non_chief_gives_up_waiting_with_the_path(monkeypatch, tmp_path):
    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]}, {"type": "worker", "index": 0})
    with pytest.raises(RuntimeError, match="the chief did not write .*saved_model.pb within 0s"):
        distribute.wait_for_chief_export(str(tmp_path / "missing"), timeout=0.2,
                                         poll_seconds=0.05)


def test_chief_does_not_wait(monkeypatch, tmp_path):
    _tf_config(monkeypatch, {"chief": ["c:0"], "worker": ["a:1"]}, {"type": "chief", "index": 0})
    distribute.wait_for_chief_export(str(tmp_path / "missing"), timeout=0)
