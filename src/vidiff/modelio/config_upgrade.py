"""Run configs of earlier vidiff versions, upgraded to today's keys (plain dicts: read by the
trainer's config loader and by `vidiff.modelio.spec` for checkpoints of the first format).

`upgrade_config_dict` moves the keys of `MOVED_KEYS` (config files, stored runs) and
`upgrade_override` the same in ``--set KEY=VALUE`` overrides, so files and commands written
for an earlier version keep working; the keys of `RETYPED_KEYS` also change their values
(``train.tensorboard = false`` is ``train.report_to = []``).
"""

from __future__ import annotations

__all__ = ["MOVED_KEYS", "RETYPED_KEYS", "upgrade_config_dict", "upgrade_override"]


# keys of earlier versions -> today's (train.sampler moved into the [sample] section)
MOVED_KEYS = {"train.sampler": "sample.sampler", "train.sample_steps": "sample.steps"}


def _trackers(value) -> list[str]:
    """train.tensorboard (a bool) as train.report_to."""
    on = value.strip().lower() == "true" if isinstance(value, str) else bool(value)
    return ["tensorboard"] if on else []


# keys of earlier versions -> (today's key, its value from the old one)
RETYPED_KEYS = {"train.tensorboard": ("train.report_to", _trackers)}


def upgrade_config_dict(data: dict, stored: bool = False) -> dict:
    """`data` with the keys of earlier versions moved to today's (`MOVED_KEYS`). A `stored`
    config (a whole run's, from a checkpoint) that predates the [sample] section sampled
    without guidance: it keeps ``guidance_scale = 1``, so an old run samples as it did."""
    if not isinstance(data, dict) or not isinstance(data.get("train"), dict):
        return data
    legacy = "sample" not in data
    data = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for old, new in MOVED_KEYS.items():
        (section, key), (new_section, new_key) = old.split("."), new.split(".")
        if key in data[section]:
            data.setdefault(new_section, {})[new_key] = data[section].pop(key)
    for old, (new, convert) in RETYPED_KEYS.items():
        (section, key), (new_section, new_key) = old.split("."), new.split(".")
        if key in data.get(section, {}):
            data.setdefault(new_section, {})[new_key] = convert(data[section].pop(key))
    if stored and legacy:
        data.setdefault("sample", {}).setdefault("guidance_scale", 1.0)
    return data


def upgrade_override(text: str) -> str:
    """A `--set KEY=VALUE` override with an earlier version's KEY moved to today's."""
    key, sep, value = text.partition("=")
    if sep and key.strip() in RETYPED_KEYS:
        new, convert = RETYPED_KEYS[key.strip()]
        return f"{new}={convert(value)!r}".replace("'", '"')
    return MOVED_KEYS.get(key.strip(), key) + sep + value if sep else text
