"""The thread policy: counts chosen for the work within the usable CPUs, the CPU limits read from
affinity and cgroup files, and every user setting respected in its order."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from leads.config.loading import load_config, system_of
from leads.config.schema import RunConfig
from leads.envs.errors import UserError
from leads.reporting.results import study_hash
from leads.threads import (
    ENV_CPU_SHARE,
    ENV_THREADS,
    WORK_PER_THREAD,
    CPULimit,
    Work,
    apply_threads,
    busy_cpus,
    cgroup_cpu_quota,
    choose_threads,
    model_work,
    prefer_sleeping_waits,
    usable_cpus,
)
from leads.training.train import run_id_of

SMALL = Work(36 * 64, "64-wide mlp, batch 36")
LARGE = Work(8 * WORK_PER_THREAD, "large")
EIGHT = CPULimit(8, "8 usable CPUs: affinity")


# ------------------------------------------------------------------------------ choices for the work
def test_small_networks_get_one_thread_whatever_the_cpus():
    assert choose_threads(None, SMALL, EIGHT, environ={}).threads == 1
    choice = choose_threads("auto", SMALL, EIGHT, environ={})
    assert choice.threads == 1 and choice.interop == 1
    assert "auto" in choice.reason and "under the" in choice.reason


def test_large_work_gets_a_thread_per_parallel_min_work_at_most_the_usable_cpus():
    assert choose_threads("auto", Work(3 * WORK_PER_THREAD, "w"), EIGHT, environ={}).threads == 3
    assert choose_threads("auto", LARGE, EIGHT, environ={}).threads == 8
    assert choose_threads("auto", Work(100 * WORK_PER_THREAD, "w"), EIGHT, environ={}).threads == 8
    assert choose_threads("auto", LARGE, CPULimit(2, "2"), environ={}).threads == 2
    assert choose_threads("auto", Work(2 * WORK_PER_THREAD - 1, "w"), EIGHT, environ={}).threads == 1
    assert choose_threads("auto", Work(2 * WORK_PER_THREAD, "w"), EIGHT, environ={}).threads == 2


def test_the_work_of_the_shipped_profiles():
    def work(system: str, profile: str = "quick") -> int:
        cfg = load_config(system, profile)
        return model_work(cfg.model, system_of(cfg).state_shape, cfg.data.batch_size).size

    # Lotka-Volterra's 64-wide MLP on batches of 36 states: 2,304 activations a layer.
    assert work("lotka_volterra") == 36 * 64
    assert work("lotka_volterra") < WORK_PER_THREAD
    # Gray-Scott's quick conv net: batch 8 x 32 channels x a 32 x 32 grid.
    assert work("gray_scott") == 8 * 32 * 32 * 32
    for system in ("lotka_volterra", "gray_scott", "kolmogorov", "navier_stokes", "burgers", "pendulum"):
        assert choose_threads(None, Work(work(system), system), EIGHT, environ={}).threads == 1, system


def test_the_log_line_says_what_and_why():
    cfg = load_config("lotka_volterra", "quick")
    work = model_work(cfg.model, system_of(cfg).state_shape, cfg.data.batch_size)
    line = choose_threads("auto", work, CPULimit(2, "2 usable CPUs: affinity"), environ={}).describe()
    assert line.startswith("torch threads: 1 (auto: 64-wide mlp, batch 36: 2,304 activations a layer")
    assert "2 usable CPUs: affinity" in line and "\n" not in line


# ------------------------------------------------------------------------------ user settings, in order
def test_env_var_wins_over_config_and_omp():
    env = {ENV_THREADS: "3", "OMP_NUM_THREADS": "1"}
    choice = choose_threads(2, SMALL, EIGHT, environ=env)
    assert choice.threads == 3 and choice.reason == f"{ENV_THREADS}=3"


def test_env_var_auto_overrides_a_config_count():
    assert choose_threads(4, SMALL, EIGHT, environ={ENV_THREADS: "auto"}).threads == 1


def test_config_count_wins_over_omp_num_threads():
    choice = choose_threads(2, SMALL, EIGHT, environ={"OMP_NUM_THREADS": "1"})
    assert choice.threads == 2 and choice.reason == "config threads=2"


def test_a_users_omp_num_threads_is_respected_even_for_large_work():
    choice = choose_threads("auto", LARGE, EIGHT, environ={"OMP_NUM_THREADS": "1"})
    assert choice.threads == 1 and choice.reason == "OMP_NUM_THREADS=1"
    assert choose_threads("auto", SMALL, EIGHT, environ={"OMP_NUM_THREADS": "4,2"}).threads == 4  # nested form


def test_an_explicit_count_above_the_cpus_is_kept_and_called_oversubscribed():
    choice = choose_threads(4, SMALL, CPULimit(2, "2 usable CPUs: affinity"), environ={})
    assert choice.threads == 4 and "oversubscribing 2" in choice.reason


def test_a_job_of_a_batch_never_takes_more_than_its_share():
    share = {ENV_CPU_SHARE: "1"}
    cpus = usable_cpus(share, affinity=1, quota=None)
    for setting, env in (("auto", {}), (4, {}), ("auto", {ENV_THREADS: "4"}), ("auto", {"OMP_NUM_THREADS": "2"})):
        choice = choose_threads(setting, LARGE, cpus, environ={**share, **env})
        assert choice.threads == 1, (setting, env, choice)


@pytest.mark.parametrize("name,value", [(ENV_THREADS, "0"), (ENV_THREADS, "two"), ("OMP_NUM_THREADS", "-1")])
def test_a_bad_count_in_the_environment_is_a_one_line_error(name, value):
    with pytest.raises(UserError, match=name) as e:
        choose_threads("auto", SMALL, EIGHT, environ={name: value})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("value", [0, -2, "many", True, 1.5])
def test_the_config_key_takes_auto_or_a_count(value):
    base = load_config("lotka_volterra", "quick")
    with pytest.raises(UserError, match="threads"):
        RunConfig.from_dict({**base.to_dict(), "threads": value})


def test_threads_are_bookkeeping_not_part_of_a_runs_identity():
    base = load_config("lotka_volterra", "quick")
    two = load_config("lotka_volterra", "quick", ["threads=2"])
    assert two.threads == 2 and base.threads is None
    assert load_config("lotka_volterra", "quick", ["threads=auto"]).threads == "auto"
    assert run_id_of(two) == run_id_of(base)
    assert study_hash(two) == study_hash(base)
    old = base.to_dict()
    del old["threads"]  # a run saved before the key existed
    assert run_id_of(old) == run_id_of(base)


# ------------------------------------------------------------------------------ the usable CPUs
def test_usable_cpus_is_the_tightest_limit():
    assert usable_cpus({}, affinity=4, quota=None) == CPULimit(4, "4 usable CPUs: affinity")
    assert usable_cpus({}, affinity=4, quota=2.5).count == 2
    assert "cgroup quota 2.5" in usable_cpus({}, affinity=4, quota=2.5).source
    assert usable_cpus({}, affinity=4, quota=0.5).count == 1  # a fraction of a CPU still runs one thread
    assert usable_cpus({ENV_CPU_SHARE: "3"}, affinity=4, quota=None).count == 3
    assert usable_cpus({ENV_CPU_SHARE: "3"}, affinity=2, quota=None).count == 2


def test_usable_cpus_are_shared_by_the_processes_of_a_multi_device_cpu_run():
    assert usable_cpus({}, affinity=8, quota=None, processes=2).count == 4
    assert usable_cpus({}, affinity=1, quota=None, processes=4).count == 1


def test_this_process_affinity_is_read():
    import os

    assert usable_cpus({}, quota=None).count == len(os.sched_getaffinity(0))


def _cgroup(tmp_path: Path, self_cgroup: str, files: dict[str, str]) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    proc = tmp_path / "self_cgroup"
    proc.write_text(self_cgroup)
    return root, proc


def test_cgroup_v2_quota_is_read_and_the_tightest_ancestor_wins(tmp_path):
    root, proc = _cgroup(tmp_path, "0::/batch/job7\n", {"batch/job7/cpu.max": "max 100000\n",
                                                       "batch/cpu.max": "150000 100000\n",
                                                       "cpu.max": "400000 100000\n"})
    assert cgroup_cpu_quota(root, proc) == 1.5


def test_cgroup_v2_without_a_limit_gives_none(tmp_path):
    root, proc = _cgroup(tmp_path, "0::/user.slice\n", {"user.slice/cpu.max": "max 100000\n"})
    assert cgroup_cpu_quota(root, proc) is None


def test_cgroup_v1_quota_is_read_from_either_mount_name(tmp_path):
    for mount in ("cpu", "cpu,cpuacct"):
        root, proc = _cgroup(tmp_path / mount, "4:memory:/x\n3:cpu,cpuacct:/docker/abc\n",
                             {f"{mount}/docker/abc/cpu.cfs_quota_us": "200000\n",
                              f"{mount}/docker/abc/cpu.cfs_period_us": "100000\n"})
        assert cgroup_cpu_quota(root, proc) == 2.0


def test_cgroup_v1_unlimited_is_none(tmp_path):
    root, proc = _cgroup(tmp_path, "1:cpu:/\n", {"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert cgroup_cpu_quota(root, proc) is None


def test_a_container_sees_the_hosts_path_and_its_own_root(tmp_path):
    # Inside a container /proc/self/cgroup names the host's path, which its mount does not have.
    root, proc = _cgroup(tmp_path, "0::/kubepods/pod12/c0ffee\n", {"cpu.max": "50000 100000\n"})
    assert cgroup_cpu_quota(root, proc) == 0.5


def test_unreadable_or_malformed_cgroup_files_give_none(tmp_path):
    assert cgroup_cpu_quota(tmp_path / "none", tmp_path / "no_such_file") is None
    root, proc = _cgroup(tmp_path, "garbage\n0::/\n", {"cpu.max": "lots\n"})
    assert cgroup_cpu_quota(root, proc) is None


# ------------------------------------------------------------------------------ applying it
def test_apply_sets_torchs_threads():
    before = torch.get_num_threads()
    try:
        choice = choose_threads(2, SMALL, EIGHT, environ={})
        apply_threads(choice)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_sleeping_waits_unless_the_user_chose():
    env: dict[str, str] = {}
    prefer_sleeping_waits(env)
    assert env == {"OMP_WAIT_POLICY": "PASSIVE"}
    for chosen in ({"OMP_WAIT_POLICY": "ACTIVE"}, {"GOMP_SPINCOUNT": "10000"}):
        env = dict(chosen)
        prefer_sleeping_waits(env)
        assert env == chosen


# ------------------------------------------------------------------------------ CPUs busy with other work
def _stat(path: Path, jiffies: dict[int, tuple[int, int]]) -> None:
    """A /proc/stat with ``{cpu: (busy, idle)}`` jiffies (user = busy, idle = idle)."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]
    lines += [f"cpu{c} {busy} 0 0 {idle} 0 0 0 0 0 0" for c, (busy, idle) in sorted(jiffies.items())]
    path.write_text("\n".join([*lines, "intr 1 2 3", "ctxt 99"]) + "\n")


def test_busy_cpus_reads_the_use_of_this_process_cpus_only(tmp_path):
    stat = tmp_path / "stat"
    _stat(stat, {0: (100, 100), 1: (100, 100), 2: (100, 100)})
    # Over the sample: cpu0 fully busy, cpu1 a quarter, cpu2 (not ours) fully busy.
    later = {0: (200, 100), 1: (125, 175), 2: (200, 100)}
    busy = busy_cpus([0, 1], seconds=0.0, stat=stat, sleep=lambda s: _stat(stat, later))
    assert busy == pytest.approx(1.25)


def test_busy_cpus_is_none_where_it_cannot_be_read(tmp_path):
    assert busy_cpus([0], seconds=0.0, stat=tmp_path / "missing", sleep=lambda s: None) is None
    stat = tmp_path / "stat"
    _stat(stat, {0: (1, 1)})
    assert busy_cpus([5], seconds=0.0, stat=stat, sleep=lambda s: None) is None  # not a CPU listed there


def test_work_worth_threads_takes_only_the_cpus_left_free():
    four = CPULimit(4, "4 usable CPUs: affinity")
    assert choose_threads("auto", LARGE, four, environ={}, busy=lambda: 0.2).threads == 4
    choice = choose_threads("auto", LARGE, four, environ={}, busy=lambda: 2.7)
    assert choice.threads == 1 and "2.7 of them busy with other processes" in choice.reason
    assert choose_threads("auto", LARGE, four, environ={}, busy=lambda: 1.4).threads == 3
    assert choose_threads("auto", LARGE, four, environ={}, busy=lambda: 9.0).threads == 1
    assert choose_threads("auto", LARGE, four, environ={}, busy=lambda: None).threads == 4


def test_the_cpus_are_not_sampled_for_small_work_or_explicit_counts():
    def never() -> float:
        raise AssertionError("sampled")

    assert choose_threads("auto", SMALL, EIGHT, environ={}, busy=never).threads == 1
    assert choose_threads(3, LARGE, EIGHT, environ={}, busy=never).threads == 3
    assert choose_threads("auto", LARGE, EIGHT, environ={"OMP_NUM_THREADS": "2"}, busy=never).threads == 2
