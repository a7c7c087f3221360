"""``--ckpt_path last``: the last training state of the same run."""

from __future__ import annotations

from pathlib import Path

from sft_research.checkpoints.training_state import saved_step
from sft_research.errors import ConfigError


class Resume:
    """Where ``--ckpt_path last`` resumes: the checkpoint file and its optimizer step."""

    def __init__(self, checkpoint: Path):
        self.checkpoint = checkpoint
        self.step = saved_step(checkpoint)


def find_last_checkpoint(config) -> Resume:
    """The last checkpoint of the same run: in a ``ModelCheckpoint`` callback's pinned ``dirpath``, or else in the
    newest ``version_N`` of the logger's folder that has one (whose logs the resumed run then continues). Never None:
    a run asked to resume that finds nothing stops, saying where it looked."""
    trainer = config.trainer
    looked: list[Path] = []
    for callback in trainer.get("callbacks") or []:
        dirpath = callback.init_args.get("dirpath") if getattr(callback, "class_path", "").endswith("ModelCheckpoint") else None
        if dirpath:
            looked.append(Path(dirpath) / "last.ckpt")
    logger = trainer.get("logger")
    init = getattr(logger, "init_args", None) if logger not in (None, False, True) else None
    if init is not None and init.get("save_dir") is not None and not looked:
        root = Path(init.save_dir) / (init.get("name") or "")
        versions = sorted((p for p in root.glob("version_*") if p.name[8:].isdigit()), key=lambda p: int(p.name[8:]), reverse=True)
        for version in versions:
            looked.append(version / "checkpoints" / "last.ckpt")
            if looked[-1].exists():  # a file, or a folder of FSDP's shards
                init.version = int(version.name[8:])  # the resumed run logs into the same folder
                break
    for path in looked:
        if path.exists():
            return Resume(path)
    where = ", ".join(str(p) for p in looked) or "nowhere: no checkpoint callback with a dirpath and no CSV logger folder"
    raise ConfigError(
        f"--ckpt_path last: no last checkpoint of this run (looked in {where}); it would start from scratch. "
        "Add a checkpoint callback with save_last (see README, Resume), or give the checkpoint's path"
    )
