import json
import os
import re
import shutil
import signal
import tempfile
from pathlib import Path

import pytest
import torch

from sft_research.checkpoints.embedded import cache_dir
from sft_research.checkpoints.tiny import build_tiny_checkpoint
from sft_research.fit.log_filters import UNACTIONABLE_WARNINGS

# What the tests and the processes they start write into caches goes to one folder of this session, removed at its
# end: never the user's caches (converted models, help texts, frozen log-probs, Hugging Face datasets, matplotlib,
# torch.compile, and wandb's, whose service keeps its own logs under WANDB_CACHE_DIR whatever XDG_CACHE_HOME says).
CACHES = (
    "SFT_RESEARCH_CACHE",
    "HF_HOME",
    "HF_DATASETS_CACHE",
    "XDG_CACHE_HOME",
    "MPLCONFIGDIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "WANDB_CACHE_DIR",
    "WANDB_CONFIG_DIR",
    "WANDB_DATA_DIR",
)


def pytest_configure(config) -> None:
    # Set once by the controlling process; pytest-xdist's workers inherit the variables and share the folder.
    if "SFT_RESEARCH_TEST_CACHES" not in os.environ:
        user = cache_dir()
        root = tempfile.mkdtemp(prefix="sft-research-tests-")
        os.environ["SFT_RESEARCH_TEST_CACHES"] = root
        for name in CACHES:
            os.environ[name] = os.path.join(root, name.lower())
        config.stash[OWNED_CACHES] = root
        link_read_only_assets(user, Path(os.environ["SFT_RESEARCH_CACHE"]))
    # pytest resets the warning filters around each test: those that sft_research.fit.log_filters sets for every run are named
    # to it too, so that its warnings summary lists only warnings worth reading.
    for message in UNACTIONABLE_WARNINGS:
        config.addinivalue_line("filterwarnings", f"ignore:{message}")


OWNED_CACHES = pytest.StashKey[str]()


def link_read_only_assets(user: Path, session: Path) -> None:
    """The default model's wheel that .ci/setup.sh fetched, and the models the user's cache converted already (each
    model folder linked, so that a model a test builds lands in the session's folder): read, never written."""
    (session / "models").mkdir(parents=True)
    if (user / "wheels").is_dir():
        (session / "wheels").symlink_to(user / "wheels")
    for model in (user / "models").glob("*") if (user / "models").is_dir() else ():
        (session / "models" / model.name).symlink_to(model)


def pytest_unconfigure(config) -> None:
    root = config.stash.get(OWNED_CACHES, None)
    if root is not None:
        shutil.rmtree(root, ignore_errors=True)
        del os.environ["SFT_RESEARCH_TEST_CACHES"]


@pytest.fixture(autouse=True)
def training_is_slow(request, monkeypatch):
    """A test that trains is marked ``slow``, so that the quick loop (``-m "not slow"``) stays under a minute: an
    unmarked test fails at its first training step."""
    if request.node.get_closest_marker("slow") is None:
        from sft_research.train.module import FineTuningModule

        def unmarked(*args, **kwargs):
            pytest.fail(f"{request.node.nodeid} trains: mark it @pytest.mark.slow", pytrace=False)

        monkeypatch.setattr(FineTuningModule, "training_step", unmarked)


def share_the_cores() -> None:
    """Under pytest-xdist, each worker (and every process a test starts) gets its share of the cores for torch's
    threads: two workers of two threads each on two cores ran the suite 25% slower than with one thread each."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers > 0:
        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)
        torch.set_num_interop_threads(threads)


share_the_cores()


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """The test's own cache of converted models and frozen log-probs, not the user's."""
    monkeypatch.setenv("SFT_RESEARCH_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama checkpoint with a ChatML tokenizer, saved like any local Hugging Face model."""
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_model_dir):
    from sft_research.checkpoints.names import load_tokenizer

    return load_tokenizer(str(tiny_model_dir))


def file_fit_args(model, data_path, root, steps: int) -> list[str]:
    """The command-line arguments of a short CPU fit of ``model`` on a JSON-lines file, batch 4, logging every step
    under ``root``; tests add the objective and optimizer they exercise."""
    return [
        f"--model.pretrained.name_or_path={model}",
        "--data.train=sft_research.data.FileDataset",
        f"--data.train.path={data_path}",
        "--data.batch_size=4",
        f"--trainer.max_steps={steps}",
        "--trainer.accelerator=cpu",
        "--trainer.log_every_n_steps=1",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_checkpointing=false",
        f"--trainer.logger.init_args.save_dir={root}",
        f"--trainer.default_root_dir={root}",
    ]


def quiet_trainer(root, **options):
    """A Lightning Trainer on the CPU that writes and prints nothing a test does not ask for (no logger, checkpoints,
    progress bar or model summary), with its files under ``root``; ``options`` add to these or replace them."""
    import lightning as L

    quiet = {
        "accelerator": "cpu",
        "logger": False,
        "enable_checkpointing": False,
        "enable_progress_bar": False,
        "enable_model_summary": False,
    }
    return L.Trainer(**(quiet | {"default_root_dir": root} | options))


def module_data(module, model_dir, data_path, batch_size: int, **options):
    """The data module of a fit of ``module`` in code on a JSON-lines file, packing and padding its batches as the
    module's execution runs them: the command line links the two, a fit in code must set them alike."""
    from sft_research.data import FileDataset, SFTDataModule

    execution = module.execution
    source = FileDataset(str(data_path))
    return SFTDataModule(
        source, tokenizer=str(model_dir), batch_size=batch_size, pack=execution.packing, pad_to_bucket=execution.compile, **options
    )


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


# Small SFT and preference data sets shared by the tests: sums, with a quality score on the SFT records.
SFT_ROWS = [
    {"prompt": f"{a} + {b} =", "completion": str(a + b), "quality": float(a % 3) / 2} for a, b in zip(range(1, 13), range(20, 8, -1))
]
PAIR_ROWS = [{"prompt": f"{a} + {b} =", "chosen": str(a + b), "rejected": str(a + b + 3)} for a, b in zip(range(1, 13), range(20, 8, -1))]

# Sums with a spread of quality scores (0 to 2), for micro-batching and gradient tests.
ROWS = [
    {"prompt": f"{a} + {b} =", "completion": str(a + b), "quality": q}
    for a, b, q in [(1, 2, 1.0), (13, 4, 0.5), (7, 70, 1.0), (5, 5, 0.0), (12, 19, 2.0), (3, 30, 1.0), (9, 8, 1.0), (100, 1, 0.25)]
]


def interruptible() -> None:
    """For a subprocess that a test stops with SIGINT: a shell runs background jobs with SIGINT ignored, and a Python
    started that way never raises KeyboardInterrupt; the child gets the default disposition back before it starts."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def readme_block(marker: str) -> str:
    """The README's fenced code block that contains ``marker``."""
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```(?:python|bash)\n(.*?)```", readme, re.DOTALL) if marker in b]
    return block
