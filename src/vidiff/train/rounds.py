"""Distillation as a chain of runs: progressive distillation's rounds (Salimans & Ho 2022,
algorithm 2), each halving the steps with the previous round's student as teacher; guided
distillation's stage one before them (Meng et al. 2023); consistency distillation's one run.

>>> from vidiff.train.rounds import distill
>>> result = distill("runs/balls", steps=4, out="runs/balls-4")   # 32 -> 16 -> 8 -> 4 steps
>>> distill("runs/balls", steps=4, out="runs/b4g", method="guided")   # guided, then rounds
>>> distill("runs/flow", steps=2, out="runs/flow-cd", method="consistency")

Round r is an ordinary run (`vidiff.train.student`) in ``OUT/rounds/<M>to<M/2>``, the last
one in OUT itself, so `vidiff sample OUT` samples the final student. Every round takes its
settings from the first teacher's run config, then `overrides`; a round that already reached
its steps is skipped (running the same call again resumes where it stopped).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from vidiff.kinds import MODEL_KINDS
from vidiff.modelio.checkpoint import CheckpointError, load_checkpoint
from vidiff.train.config import RunConfig, TrainConfig, merge_run_config
from vidiff.train.result import TrainResult
from vidiff.train.trainer import train
from vidiff.train.validation import validate
from vidiff.utils.config_io import ConfigError

__all__ = ["default_teacher_steps", "distill", "round_folders", "round_plan"]


def default_teacher_steps(steps: int) -> int:
    """The first teacher's steps when none are given: the smallest steps x 2^r >= 32, r >= 1."""
    teacher = 2 * steps
    while teacher < 32:
        teacher *= 2
    return teacher


def round_plan(teacher_steps: int, steps: int) -> list[int]:
    """The teacher's steps of each round, from `teacher_steps` down to 2 x `steps`; a
    ConfigError unless `teacher_steps` is `steps` times a power of two (at least 2)."""
    plan, m = [], teacher_steps
    while m > steps and m % 2 == 0:
        plan.append(m)
        m //= 2
    if m != steps or not plan:
        raise ConfigError(f"--teacher-steps {teacher_steps} must be --steps {steps} times a "
                          f"power of two (e.g. {default_teacher_steps(steps)}): each round "
                          f"halves the steps")
    return plan


def round_folders(out: Path, plan: list[int]) -> list[Path]:
    """Where each round's run goes: ``out/rounds/<M>to<M/2>``, the last round `out`."""
    return [out / "rounds" / f"{m}to{m // 2}" for m in plan[:-1]] + [out]


def _teacher_config(teacher: str) -> RunConfig:
    try:
        ckpt = load_checkpoint(teacher)
    except CheckpointError as err:
        raise ConfigError(f"the teacher: {err}") from None
    if not ckpt.config:
        raise ConfigError(f"the teacher {teacher!r} holds no run config (an export?): "
                          f"distill a run folder or checkpoint, whose data the student reads")
    config = RunConfig.from_dict(ckpt.config)
    # a student learns the teacher, not the data: no held-out validation (`_check_held_out`)
    data = replace(config.data, val_fraction=0.0, val_data=None)
    return replace(config, data=data, train=replace(config.train, resume=TrainConfig.resume))


def _run(base: RunConfig, folder: Path, settings: list[str], overrides) -> TrainResult:
    """One distillation run in `folder` (skipped by `train` itself once it has its steps)."""
    config = validate(merge_run_config(None, [f"train.out={folder}", *settings, *overrides],
                                       base=base))
    return train(config)


def _guidance_settings(base: RunConfig) -> list[str]:
    """What makes the student's network take the guidance scale (its kind's settings)."""
    kind = MODEL_KINDS.get(base.model.kind)
    if not kind.guidance_settings:
        can = [name for name in MODEL_KINDS.names() if MODEL_KINDS.get(name).guidance_settings]
        raise ConfigError(f"--method guided adds a guidance-scale input to the network; a "
                          f"{base.model.kind} model has none in vidiff (kinds that can: "
                          f"{', '.join(can)})")
    return list(kind.guidance_settings)


def distill(teacher: str | Path, *, steps: int | None, out: str | Path,
            method: str = "progressive", teacher_steps: int | None = None,
            round_steps: int = 500, guidance_scale: float = 1.0,
            guidance_range: tuple[float, float] = (1.0, 4.0),
            overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Distill the run or checkpoint `teacher` into a student of `steps` steps in `out`
    (module doc), each run `round_steps` optimizer steps:

    - progressive: rounds from `teacher_steps` (default `default_teacher_steps`) down;
    - consistency: one run on the teacher's grid of `teacher_steps` (default the same);
    - guided: one run whose student takes the scale in `guidance_range` as its input; with
      `steps`, progressive rounds of that student follow (Meng et al.'s stage two), the
      guided stage in ``out/rounds/guided``.

    The teacher's guidance is `guidance_scale` (progressive, consistency). Returns the last
    run's `TrainResult` (an interrupted run ends the call)."""
    if steps is not None and steps < 1:
        raise ConfigError(f"--steps {steps} must be >= 1")
    if steps is None and method != "guided":
        raise ConfigError(f"--method {method} needs --steps, the student's steps")
    base = _teacher_config(str(teacher))
    shared = [f"distill.method={method}", f"distill.guidance_scale={guidance_scale}",
              f"distill.guidance_min={guidance_range[0]}",
              f"distill.guidance_max={guidance_range[1]}"]
    out, source = Path(out), str(teacher)
    if method == "guided":
        stage = out if steps is None else out / "rounds" / "guided"
        result = _run(base, stage, [*shared, f"distill.teacher={source}",
                                    f"train.steps={round_steps}",
                                    *_guidance_settings(base)], overrides)
        if steps is None or result.interrupted is not None:
            return result
        base, source = _teacher_config(str(stage)), str(stage)
        shared[0] = "distill.method=progressive"
    if method == "consistency":
        m = teacher_steps or default_teacher_steps(steps)
        return _run(base, out, [*shared, f"distill.teacher={source}",
                                f"distill.teacher_steps={m}", f"distill.student_steps={steps}",
                                f"train.steps={round_steps}"], overrides)
    plan = round_plan(teacher_steps or default_teacher_steps(steps), steps)
    for m, folder in zip(plan, round_folders(out, plan), strict=True):
        result = _run(base, folder, [*shared, f"distill.teacher={source}",
                                     f"distill.teacher_steps={m}",
                                     f"train.steps={round_steps}"], overrides)
        if result.interrupted is not None:
            return result
        source = str(folder)
    return result
