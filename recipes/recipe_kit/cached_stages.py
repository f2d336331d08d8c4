"""A recipe run as numbered stages, each cached in its own folder: a stage writes one sub-folder of the output folder
plus a ``.done`` marker that records the settings it was built with; a re-run loads a marked folder instead of
rebuilding it, and warns when the current settings differ from the recorded ones (delete the folder to rebuild it).

The recipe names its stages and the settings each one reads (``table``: stage name -> setting names, in stage
order); a stage depends on its own settings and every earlier stage's (`stage_settings`).
"""

import json
import logging
import time
from dataclasses import asdict
from pathlib import Path

logger = logging.getLogger(__name__)
MARKER = ".done"


def stage(index: int, name: str, out_dir: Path, build, load, *, total: int, all_processes: bool = False,
          settings: dict | None = None, log: logging.Logger = logger):
    """Run ``build(out_dir)`` unless ``out_dir`` is marked done; either way return ``load(out_dir)``.

    Under a multi-process launch only the main process builds and the others wait for it, unless
    ``all_processes`` (training: every process takes part, the main process writes the files and the marker).

    Args:
        index (`int`), total (`int`): the stage's number and the recipe's count of stages, for the log lines.
        settings (`dict`, *optional*): JSON values recorded in the marker; a cached stage built with other values is
            used anyway, with a warning naming each changed setting.
        log (`logging.Logger`): where the progress lines and the warning go (the recipe's logger).
    """
    from accelerate import PartialState

    state = PartialState()
    marker = out_dir / MARKER
    settings = settings or {}
    if marker.is_file():
        log.info(f"[{index}/{total}] {name}: cached in {out_dir}")
        recorded = json.loads(marker.read_text()).get("settings", {})
        changed = sorted(k for k in settings if k in recorded and recorded[k] != settings[k])
        if changed:
            log.warning("%s was built with other settings (%s); delete %s to rebuild it with the current ones",
                        out_dir, ", ".join(f"{k}: {recorded[k]!r} -> {settings[k]!r}" for k in changed), out_dir)
        return load(out_dir)
    start = time.time()
    if all_processes:
        log.info(f"[{index}/{total}] {name}: running")
        out_dir.mkdir(parents=True, exist_ok=True)
        build(out_dir)
        state.wait_for_everyone()
    else:
        with state.main_process_first():
            if state.is_main_process:
                log.info(f"[{index}/{total}] {name}: running")
                out_dir.mkdir(parents=True, exist_ok=True)
                build(out_dir)
    if state.is_main_process:
        seconds = time.time() - start
        marker.write_text(json.dumps({"seconds": round(seconds, 1), "settings": settings}, default=str))
        log.info(f"[{index}/{total}] {name}: done in {seconds:.1f}s")
    state.wait_for_everyone()
    return load(out_dir)


def all_settings(*groups) -> dict:
    """Every setting of ``groups`` by name, as JSON values (what a marker records and compares). A group is a
    dataclass, or a `transformers.TrainingArguments` (its ``to_dict``: enums as their values, tokens masked); a name
    in two groups takes the later group's value."""
    values = {}
    for group in groups:
        values.update(group.to_dict() if hasattr(group, "to_dict") else asdict(group))
    return json.loads(json.dumps(values, default=str))


def stage_settings(everything: dict, upto: str, table: dict, not_settings=(), every_setting_from: str | None = None):
    """The settings stage ``upto`` depends on: its own and every earlier stage's in ``table``. From stage
    ``every_setting_from`` on (stages that read the whole configuration, training say), every setting of
    ``everything`` but ``not_settings`` (where outputs go, speed and logging knobs...) as well."""
    names = list(table)
    keys = [k for name in names[: names.index(upto) + 1] for k in table[name]]
    if every_setting_from is not None and names.index(upto) >= names.index(every_setting_from):
        keys += [k for k in everything if k not in not_settings and k not in keys]
    return {k: everything[k] for k in keys}
