"""A hub id with the hub out of reach fails at once, naming what was tried, instead of after the clients' retries."""

import pytest

from sft_research.checkpoints import hub
from sft_research.checkpoints.names import ModelLoadError, load_tokenizer
from sft_research.data import DataError, FileDataset


@pytest.fixture
def unreachable(monkeypatch):
    monkeypatch.setattr(hub, "hub_reachable", lambda: False)
    monkeypatch.setattr("sft_research.checkpoints.names.hub_reachable", lambda: False)


def test_offline_mode_is_unreachable_without_asking_the_network(monkeypatch):
    hub.hub_reachable.cache_clear()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub.socket, "create_connection", lambda *a, **k: pytest.fail("the network was asked"))
    assert hub.hub_reachable() is False
    hub.hub_reachable.cache_clear()


def test_a_model_id_not_in_the_cache_fails_at_once_when_the_hub_is_out_of_reach(unreachable):
    with pytest.raises(
        ModelLoadError, match=r"no-such-org/no-such-model: .*the hub cannot be reached from here and it is not in the local"
    ):
        load_tokenizer("no-such-org/no-such-model")


def test_a_dataset_id_not_in_the_cache_fails_at_once_when_the_hub_is_out_of_reach(unreachable):
    import datasets.config
    import huggingface_hub.constants

    before = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    with pytest.raises(DataError, match=r"no-such-org/no-such-data.*the hub cannot be reached from here and it is not in the local cache"):
        FileDataset("no-such-org/no-such-data").records()
    assert (huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE) == before, "the clients' settings are put back"


def test_a_model_config_not_in_the_cache_fails_at_once_when_the_hub_is_out_of_reach(unreachable, tmp_path, monkeypatch):
    """The checks before any weights load read a hub model's config.json from the cache, else from the hub: out of
    reach and not cached, they stop at once, saying so (the load would fail the same way)."""
    import huggingface_hub.constants

    from sft_research.checkpoints.names import model_config

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"no-such-org/no-such-model: its config.json could not be read \(not in the local Hugging "):
        model_config("no-such-org/no-such-model")
