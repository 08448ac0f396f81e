"""Progressive distillation's rounds (Salimans & Ho 2022, algorithm 2): runs that halve the
steps, each round's teacher the previous round's student.

>>> from vidiff.train.rounds import distill
>>> result = distill("runs/balls", steps=4, out="runs/balls-4")   # 32 -> 16 -> 8 -> 4 steps

Round r is an ordinary run (`vidiff.train.student`) in ``OUT/rounds/<M>to<M/2>``, the last
one in OUT itself, so `vidiff sample OUT` samples the final student. Every round takes its
settings from the first teacher's run config, then `overrides`; a round that already reached
its steps is skipped (running the same call again resumes where it stopped).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

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
    return replace(config, train=replace(config.train, resume=TrainConfig.resume))


def distill(teacher: str | Path, *, steps: int, out: str | Path, teacher_steps: int | None = None,
            round_steps: int = 500, guidance_scale: float = 1.0, method: str = "progressive",
            overrides: list[str] | tuple[str, ...] = ()) -> TrainResult:
    """Distill the run or checkpoint `teacher` into a student of `steps` steps in `out`
    (module doc): rounds of `round_steps` optimizer steps, the first teacher sampled with
    `teacher_steps` (default `default_teacher_steps`) at `guidance_scale`. Returns the last
    round's `TrainResult` (an interrupted round ends the call)."""
    if steps < 1:
        raise ConfigError(f"--steps {steps} must be >= 1")
    plan = round_plan(teacher_steps or default_teacher_steps(steps), steps)
    base = _teacher_config(str(teacher))
    source, result = str(teacher), None
    for m, folder in zip(plan, round_folders(Path(out), plan), strict=True):
        settings = [f"train.out={folder}", f"train.steps={round_steps}",
                    f"distill.teacher={source}", f"distill.teacher_steps={m}",
                    f"distill.guidance_scale={guidance_scale}", f"distill.method={method}"]
        config = validate(merge_run_config(None, [*settings, *overrides], base=base))
        result = train(config)
        if result.interrupted is not None:
            return result
        source = str(folder)
    return result
