"""Tests of evolve/runner.py: TrialJobs run as Ray Tune trials on the session's local Ray."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trainers_for_tests as tt
from cluster_job import max_overlap

from detector.hyp import DEFAULT_HYP
from evolve.contract import fitness
from evolve.errors import ConfigError
from evolve.config import RayConfig, SurrogateOptions, TrialConfig
from evolve.execution.jobs import WAIT, TrialJob
from evolve.execution.runner import TrialRunner

pytestmark = pytest.mark.usefixtures("ray_cluster")
ROOT = Path(__file__).resolve().parents[3]


def make_jobs(n: int, generation: int = 0, start: int = 0) -> list[TrialJob]:
    jobs = []
    for i in range(start, start + n):
        hyp = dict(DEFAULT_HYP, lr0=0.001 * (i + 1), momentum=0.6 + 0.05 * i)
        jobs.append(TrialJob(f"g{generation}i{i}", generation, i, hyp))
    return jobs


class ListSource:
    """Hands out a fixed list of jobs and keeps every result and per-epoch report."""

    def __init__(self, jobs: list[TrialJob]):
        self.pending = list(jobs)
        self.results: dict[str, object] = {}
        self.epochs: list[tuple[str, int, float]] = []

    def next_job(self):
        return self.pending.pop(0) if self.pending else None

    def on_result(self, job, metrics):
        self.results[job.trial_id] = metrics

    def on_epoch(self, job, epoch, metrics):
        self.epochs.append((job.trial_id, epoch, metrics.fitness))


def make_runner(tmp_path: Path, trainer: str, ray_cfg: RayConfig | None = None, epochs: int = 2,
                scheduler=None, **extra) -> TrialRunner:
    cfg = TrialConfig(epochs=epochs, extra=extra)
    return TrialRunner(ray_cfg or RayConfig(), f"trainers_for_tests:{trainer}", cfg, tmp_path / "run",
                       scheduler=scheduler)


def expected_fitness(job: TrialJob) -> float:
    return fitness(tt.expected_map50(job.hyp), tt.expected_map50_95(job.hyp))


def test_six_jobs_reach_on_result_with_their_fitness_and_files(tmp_path):
    jobs = make_jobs(6)
    source = ListSource(jobs)
    with make_runner(tmp_path, "linear") as runner:
        runner.run(source)
    assert sorted(source.results) == sorted(j.trial_id for j in jobs)
    for job in jobs:
        m = source.results[job.trial_id]
        assert m.status == "ok"
        assert m.fitness == pytest.approx(expected_fitness(job), abs=1e-9)
        assert (m.map50, m.precision, m.recall, m.epochs, m.seconds) == \
            (pytest.approx(tt.expected_map50(job.hyp)), 0.5, 0.25, 2, 1.5)
        trial_dir = tmp_path / "run" / "trials" / job.trial_id
        assert (trial_dir / "weights.txt").read_text() == "trained\n"
        log = (trial_dir / "trial.log").read_text()
        assert f"trial {job.trial_id} (generation 0, individual {job.individual}) starts" in log
        assert "ends: status ok" in log
    # two per-epoch reports per trial, the first at half the final fitness
    assert len(source.epochs) == 12
    first = {tid: f for tid, e, f in source.epochs if e == 1}
    assert first["g0i3"] == pytest.approx(expected_fitness(jobs[3]) / 2, abs=1e-9)
    # Ray Tune's own records: three reports per trial, each saying where and when it ran
    records = tune_records(tmp_path / "run" / "ray")
    assert sorted(records) == sorted(j.trial_id for j in jobs)
    for job in jobs:
        rows = records[job.trial_id]
        assert [(r["epoch"], r["final"]) for r in rows] == [(1, False), (2, False), (2, True)]
        assert rows[-1]["fitness"] == pytest.approx(expected_fitness(job), abs=1e-9)
        assert len({r["pid"] for r in rows}) == 1 and len({r["start_time"] for r in rows}) == 1
        assert rows[0]["start_time"] <= rows[0]["end_time"] <= rows[-1]["end_time"]
        assert (rows[-1]["gpu_ids"], len(rows[-1]["node_id"])) == ([], 56)


def tune_records(storage: Path) -> dict[str, list[dict]]:
    """Every report of every trial as Ray Tune logged it (result.json), by the job's trial id."""
    out: dict[str, list[dict]] = {}
    for path in storage.glob("tune-*/*/result.json"):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        if rows:
            out[rows[0]["config"]["trial_id"]] = rows
    return out


OUTCOMES = {  # trainer -> (status, text in trial.log)
    "raises": ("failed", "ValueError: boom in the trainer"),
    "garbage": ("failed", "unusable result"),
    "as_mapping": ("ok", "ends: status ok"),
    "diverges": ("diverged", "ends: status diverged"),
    "always_dies": ("failed", "starts with trainer"),  # lost on every attempt: failed once retries are spent
}


def test_each_trainer_outcome_is_recorded_and_the_run_goes_on(tmp_path):
    jobs = [TrialJob(f"{name}-{i}", 0, i, job.hyp)
            for i, (name, job) in enumerate(zip(OUTCOMES, make_jobs(len(OUTCOMES))))]
    source = ListSource(jobs)
    make_runner(tmp_path, "by_trial_id").run(source)
    assert sorted(source.results) == sorted(j.trial_id for j in jobs)
    for job in jobs:
        name = job.trial_id.split("-")[0]
        status, text = OUTCOMES[name]
        m = source.results[job.trial_id]
        assert m.status == status, name
        if status == "ok":  # a mapping from a user's trainer is turned into Metrics
            assert m.fitness == pytest.approx(expected_fitness(job), abs=1e-9)
        else:
            assert m.fitness == 0.0
        log = (tmp_path / "run" / "trials" / job.trial_id / "trial.log").read_text()
        assert text in log, name
    assert source.results["as_mapping-2"].box_loss == 0.125
    assert source.results["raises-0"].epochs == 1  # it had reported one epoch before raising
    # the lost trial ran three times (first run and MAX_FAILURES retries), each logged
    assert (tmp_path / "run" / "trials" / "always_dies-4" / "trial.log").read_text().count("starts") == 3


class TwoBatchSource(ListSource):
    """Yields a first batch, then WAIT until all of it has results, then a second batch."""

    def __init__(self):
        super().__init__([])
        self.first, self.second = make_jobs(3), make_jobs(3, generation=1)
        self.seen_at_second: list[int] = []

    def next_job(self):
        if self.first:
            return self.first.pop(0)
        if len(self.results) < 3:
            return WAIT
        if self.second:
            self.seen_at_second.append(all(j.trial_id in self.results for j in make_jobs(3)))
            return self.second.pop(0)
        return None


def test_wait_holds_the_second_batch_until_the_first_has_ended(tmp_path):
    source = TwoBatchSource()
    make_runner(tmp_path, "linear", epochs=1).run(source)
    assert len(source.results) == 6
    assert source.seen_at_second == [True, True, True]
    assert {m.status for m in source.results.values()} == {"ok"}


def _intervals(stamp_dir: Path) -> list[tuple[float, float]]:
    out = []
    for start in stamp_dir.glob("*.start"):
        end = start.with_suffix(".end")
        out.append((float(start.read_text()), float(end.read_text())))
    return out


@pytest.mark.parametrize("cpus,limit,n", [(1.0, 1, 3), (0.5, 2, 4)])
def test_max_concurrent_is_respected(tmp_path, cpus, limit, n):
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    source = ListSource(make_jobs(n))
    runner = make_runner(tmp_path, "linear", RayConfig(cpus_per_trial=cpus, max_concurrent=limit), epochs=1,
                         stamp_dir=str(stamps), sleep=0.3)
    runner.run(source)
    intervals = _intervals(stamps)
    assert len(intervals) == n and len(source.results) == n
    assert 1 <= max_overlap(intervals) <= limit


def test_default_concurrency_follows_the_cluster_resources(tmp_path):
    assert make_runner(tmp_path, "linear", RayConfig(cpus_per_trial=1)).concurrency() == 2
    assert make_runner(tmp_path, "linear", RayConfig(cpus_per_trial=0.5)).concurrency() == 4
    assert make_runner(tmp_path, "linear", RayConfig(cpus_per_trial=0.5, max_concurrent=3)).concurrency() == 3
    with pytest.raises(ConfigError, match="--gpus-per-trial 1.*only 0 GPUs"):
        make_runner(tmp_path, "linear", RayConfig(gpus_per_trial=1)).concurrency()


def _stop_after_first_epoch():
    from ray.tune.schedulers import FIFOScheduler, TrialScheduler

    class StopAfterFirstEpoch(FIFOScheduler):
        def on_trial_result(self, tune_controller, trial, result):
            if result.get("epoch") == 1 and not result.get("final"):
                return TrialScheduler.STOP
            return TrialScheduler.CONTINUE

    return StopAfterFirstEpoch()


def test_a_trial_ended_by_a_scheduler_is_recorded_stopped_with_what_it_reached(tmp_path):
    jobs = make_jobs(2)
    source = ListSource(jobs)
    make_runner(tmp_path, "linear", epochs=3, scheduler=_stop_after_first_epoch()).run(source)
    for job in jobs:
        m = source.results[job.trial_id]
        assert (m.status, m.epochs) == ("stopped", 1)
        assert m.fitness == pytest.approx(expected_fitness(job) / 3, abs=1e-9)


ASHA_LR0 = [0.01, 0.006, 0.015, 0.003, 0.03, 0.001, 0.0005, 0.06, 0.0002, 0.09]  # good ones first


def surrogate_curve(hyp: dict, epochs: int) -> list[float]:
    from evolve.search.surrogate import train

    curve: list[float] = []
    train(hyp, TrialConfig(epochs=epochs), lambda epoch, m: curve.append(m.fitness))
    return curve


def test_asha_stops_hopeless_trials_and_each_trial_is_recorded_once(tmp_path):
    jobs = [TrialJob(f"a{i}", 0, i, dict(DEFAULT_HYP, lr0=lr)) for i, lr in enumerate(ASHA_LR0)]
    calls: list[str] = []

    class Counting(ListSource):
        def on_result(self, job, metrics):
            calls.append(job.trial_id)
            super().on_result(job, metrics)

    source = Counting(jobs)
    cfg = TrialConfig(epochs=6, val_every=0, surrogate=SurrogateOptions(seconds=0.3))
    from evolve.execution.asha import epoch_asha

    runner = TrialRunner(RayConfig(cpus_per_trial=0.5), "surrogate", cfg, tmp_path / "run",
                         scheduler=epoch_asha(6, grace_period=1, reduction_factor=3))
    assert runner.trial_spec().cfg.val_every == 1  # early stopping needs every epoch validated
    runner.run(source)
    assert sorted(calls) == sorted(j.trial_id for j in jobs)  # each trial recorded exactly once
    statuses = {tid: m.status for tid, m in source.results.items()}
    stopped = [tid for tid, st in statuses.items() if st == "stopped"]
    assert len(stopped) >= 2 and set(statuses.values()) == {"ok", "stopped"}, statuses
    records = tune_records(tmp_path / "run" / "ray")
    for job in jobs:
        m = source.results[job.trial_id]
        curve = surrogate_curve(job.hyp, 6)
        rows = records[job.trial_id]
        if m.status == "ok":
            assert m.epochs == 6 and rows[-1]["final"] is True
            assert m.fitness == pytest.approx(curve[-1], abs=1e-9)
        else:  # stopped between epochs with the fitness of its last epoch, and no final report
            assert 1 <= m.epochs < 6, job.trial_id
            assert m.fitness == pytest.approx(curve[m.epochs - 1], abs=1e-9)
            assert [r["epoch"] for r in rows] == list(range(1, m.epochs + 1))
            assert not any(r["final"] for r in rows)
            last_epoch = [f for tid, e, f in source.epochs if tid == job.trial_id][-1]
            assert m.fitness == pytest.approx(last_epoch, abs=1e-12)


def test_the_runner_stops_trials_only_by_the_scheduler_its_caller_passes(tmp_path):
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from evolve.execution.asha import epoch_asha

    cfg = TrialConfig(epochs=9, val_every=0)
    asha = epoch_asha(9, grace_period=2, reduction_factor=4)
    assert isinstance(asha, AsyncHyperBandScheduler)
    assert (asha._time_attr, asha._metric, asha._mode, asha._max_t) == ("epoch", "fitness", "max", 9)
    assert [milestone for milestone, _ in asha._brackets[0]._rungs] == [8, 2]
    given = TrialRunner(RayConfig(), "surrogate", cfg, tmp_path, scheduler=asha)
    assert given.scheduler is asha and given.trial_spec().cfg.val_every == 1  # judged every epoch
    alone = TrialRunner(RayConfig(early_stop="asha"), "surrogate", cfg, tmp_path)
    assert alone.scheduler is None and alone.trial_spec().cfg.val_every == 0  # the flag is the loops' to read


def test_asha_of_a_resumed_run_starts_from_the_rung_fitness_on_record():
    from types import SimpleNamespace

    from ray.tune.schedulers import TrialScheduler

    from evolve.execution.asha import epoch_asha

    bracket = epoch_asha(9, 1, 3.0, history={1: [0.5, 0.7, 0.9], 5: [0.1]})._brackets[0]
    assert [(m, sorted(r.values())) for m, r in bracket._rungs] == [(9, []), (3, []), (1, [0.5, 0.7, 0.9])]
    # Below the top third of the trials on record: stopped at once, as the run before its resume would.
    assert bracket.on_result(SimpleNamespace(trial_id="new"), 1, 0.6) == TrialScheduler.STOP
    assert bracket.on_result(SimpleNamespace(trial_id="good"), 1, 0.8) == TrialScheduler.CONTINUE
    fresh = epoch_asha(9, 1, 3.0)._brackets[0]
    assert fresh.on_result(SimpleNamespace(trial_id="new"), 1, 0.6) == TrialScheduler.CONTINUE


def test_an_error_in_the_source_stops_the_run_and_is_raised(tmp_path):
    class Failing(ListSource):
        def on_result(self, job, metrics):
            raise OSError(f"disk full while recording {job.trial_id}")

    with pytest.raises(OSError, match="disk full while recording"):
        make_runner(tmp_path, "linear", epochs=1).run(Failing(make_jobs(3)))


def test_wait_with_nothing_running_is_an_error(tmp_path):
    class Stuck(ListSource):
        def next_job(self):
            return WAIT

    with pytest.raises(RuntimeError, match="WAIT while no trial is running"):
        make_runner(tmp_path, "linear").run(Stuck([]))


def test_ctrl_c_stops_running_trials_and_propagates(tmp_path):
    stamps, markers = tmp_path / "stamps", tmp_path / "markers"
    stamps.mkdir()
    markers.mkdir()
    source = ListSource(make_jobs(2))
    # 100 epochs of 0.2 s: the trials would need 20 s unless they are stopped
    runner = make_runner(tmp_path, "interrupts_driver", epochs=100, stamp_dir=str(stamps),
                         marker_dir=str(markers), driver_pid=os.getpid(), sleep=0.2)
    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        runner.run(source)
    assert time.monotonic() - start < 20.0
    assert source.results == {}
    assert list(stamps.glob("*.start")) and not list(stamps.glob("*.end"))


SCRIPT = """
import json, sys
from pathlib import Path
import ray
from detector.hyp import DEFAULT_HYP
from evolve.config import RayConfig, SurrogateOptions, TrialConfig
from evolve.execution.jobs import TrialJob
from evolve.execution.runner import TrialRunner

class Source:
    def __init__(self):
        self.jobs = [TrialJob(f"g0i{i}", 0, i, dict(DEFAULT_HYP)) for i in range(3)]
        self.statuses = []
    def next_job(self):
        return self.jobs.pop() if self.jobs else None
    def on_result(self, job, metrics):
        self.statuses.append(metrics.status)

for name, kwargs in json.loads(sys.argv[2]).items():
    runner = TrialRunner(RayConfig(**kwargs), "trainers_for_tests:linear", TrialConfig(epochs=1),
                         Path(sys.argv[1], name))
    source = Source()
    with runner:
        runner.run(source)
        limit = runner.concurrency()
    print(json.dumps({"name": name, "statuses": source.statuses, "limit": limit,
                      "after": ray.is_initialized()}))
"""


def test_a_driver_process_joins_a_cluster_quietly(tmp_path, ray_cluster):
    # (a driver starting an embedded Ray of its own, with logical GPUs, is tested in test_packing.py)
    configs = {"join": {"address": ray_cluster}}
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path), json.dumps(configs)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # Ray and Tune print nothing of their own on stdout
    out = json.loads(lines[0])
    assert out["statuses"] == ["ok", "ok", "ok"]
    assert out["after"] is False  # the runner disconnected from what it joined
    assert len(list((tmp_path / "join" / "trials").glob("*/trial.log"))) == 3
    assert out["limit"] == 2
    import ray

    assert ray.cluster_resources().get("CPU") == 2  # the shared cluster survives a driver that joined it


@pytest.mark.parametrize("kwargs,match", [
    ({"cpus_per_trial": -1}, "--cpus-per-trial -1"),
    ({"cpus_per_trial": float("nan")}, "--cpus-per-trial nan"),
    ({"cpus_per_trial": 0, "gpus_per_trial": 0}, "both are 0"),
    ({"gpus_per_trial": 1.5}, "--gpus-per-trial 1.5"),
    ({"max_concurrent": 0}, "--max-concurrent 0"),
    ({"num_cpus": 0}, "--num-cpus 0"),
    ({"num_gpus": -1}, "--num-gpus -1"),
    ({"address": "headnode"}, "--address 'headnode': expected 'auto' or 'host:port'"),
    ({"address": "headnode:port"}, "--address 'headnode:port': expected"),
    ({"address": "ray://headnode:10001"}, "Ray Client addresses are not supported"),
    ({"address": "auto", "num_cpus": 4}, "--address 'auto'.*embedded Ray only"),
    ({"early_stop": "hyperband"}, "--early-stop 'hyperband': expected one of none, asha"),
    ({"grace_epochs": 0}, "--grace-epochs 0: must be a whole number >= 1"),
    ({"grace_epochs": 1.5}, "--grace-epochs 1.5: must be a whole number >= 1"),
    ({"reduction_factor": 1}, "--reduction-factor 1: must be a number > 1"),
    ({"reduction_factor": float("inf")}, "--reduction-factor inf: must be a number > 1"),
    ({"workers_per_trial": 0}, "--workers-per-trial 0: must be a whole number >= 1"),
    ({"workers_per_trial": 2, "gpus_per_trial": 1}, "--workers-per-trial 2 with --gpus-per-trial 1"),
    ({"storage": ""}, "--storage '': expected a folder or a URI"),
])
def test_bad_ray_flags_are_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        RayConfig(**kwargs)


def test_an_address_where_nothing_listens_is_a_config_error():
    from evolve.execution.cluster import check_reachable as _check_reachable

    with pytest.raises(ConfigError, match="--address '127.0.0.1:1': no Ray cluster answers there"):
        _check_reachable("127.0.0.1:1")
    _check_reachable("auto")  # found by Ray itself, which fails fast when there is none


def test_an_unusable_trainer_is_rejected_before_any_trial(tmp_path):
    with pytest.raises(ConfigError, match="no_such_module_xyz"):
        TrialRunner(RayConfig(), "no_such_module_xyz:train", TrialConfig(), tmp_path)
