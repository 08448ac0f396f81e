"""The condition options of the sampling commands: --class, --caption, --negative-prompt and
--guidance-scale, checked against the model before any sampling (`read_conditions`) and made
into the `vidiff.Cond` of N videos (`Conditions.cond`).

`vidiff sample` conditions every model (without --class / --caption: its classes in turn, or
its class names as captions). `vidiff extend`, `interpolate` and `upsample` condition only
when asked: without --class or --caption they sample the unconditional model (the null label
or the empty prompt), as VDM section 3.1 extends videos; with them, image-to-video
(``vidiff extend --input first_frame.png --caption ...``) follows the prompt under the run's
guidance scale.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from vidiff.cli import CommandError
from vidiff.cond import Cond
from vidiff.modelio.pipeline import ConditionError


def add_condition_arguments(parser: argparse.ArgumentParser) -> None:
    """--class, --caption, --negative-prompt and --guidance-scale."""
    parser.add_argument("--class", dest="class_", metavar="LABEL", default=None,
                        help="class-conditional models: a class index or name, or a comma "
                             "list cycled over the videos")
    parser.add_argument("--caption", default=None,
                        help="text-conditional models: the caption")
    parser.add_argument("--negative-prompt", default=None, metavar="TEXT",
                        help="Wan / LTX-Video / CogVideoX: the text guidance steers away from "
                             "(None: the empty prompt)")
    parser.add_argument("--guidance-scale", type=float, default=None,
                        help="classifier-free guidance scale for conditional models (1: none; "
                             "None: the run's sample.guidance_scale)")


@dataclass(frozen=True)
class Conditions:
    """The conditions asked for on the command line (None: not given)."""

    labels: list[int] | None = None  # class indices, cycled over the videos
    caption: str | None = None
    negative_prompt: str | None = None

    @property
    def given(self) -> bool:
        """Whether a class or a caption was given."""
        return self.labels is not None or self.caption is not None

    def call(self) -> dict:
        """The keywords of `vidiff.Pipeline.__call__` / `conditions` for these conditions."""
        return dict(class_labels=self.labels,
                    captions=None if self.caption is None else [self.caption],
                    negative_prompt=None if self.negative_prompt is None
                    else [self.negative_prompt])

    def cond(self, pipe, count: int) -> Cond:
        """The `vidiff.Cond` of `count` videos; an empty one (the unconditional model) when
        nothing was given."""
        if not self.given:
            return Cond()
        try:
            return pipe.conditions(count, **self.call())
        except ValueError as err:
            raise CommandError(str(err)) from None


def labels_of(text: str, names: list[str], num_classes: int) -> list[int]:
    """The class indices of a --class value: indices or class names, comma separated."""
    labels = []
    for part in [p.strip() for p in text.split(",") if p.strip()]:
        if part.lstrip("-").isdigit():
            label = int(part)
        elif part in names:
            label = names.index(part)
        else:
            known = ", ".join(repr(n) for n in names[:12])
            raise CommandError(f"--class {part!r} is neither a class index in [0, "
                               f"{num_classes}) nor a class name; names: {known}")
        if not 0 <= label < num_classes:
            raise CommandError(f"--class {label} is out of range: the model has "
                               f"{num_classes} classes (0..{num_classes - 1})")
        labels.append(label)
    return labels


OPTIONS = {"class_labels": "--class", "captions": "--caption",
           "negative_prompt": "--negative-prompt"}  # Pipeline.conditions keyword -> option


def read_conditions(args: argparse.Namespace, pipe) -> Conditions:
    """The conditions of `args`, each checked against the model (`Pipeline.check_conditions`:
    a `CommandError` naming the option it does not take)."""
    spec = pipe.spec
    try:
        pipe.check_conditions(class_labels=args.class_, captions=args.caption,
                              negative_prompt=args.negative_prompt)
    except ConditionError as err:
        raise CommandError(err.named(OPTIONS[err.field])) from None
    labels = None if args.class_ is None else labels_of(
        args.class_, spec.conditioning.class_names, spec.num_classes)
    if args.guidance_scale not in (None, 1.0) and not spec.conditional:
        raise CommandError("--guidance-scale needs a conditional model (class or caption)")
    return Conditions(labels, args.caption, args.negative_prompt)
