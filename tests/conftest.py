"""pytest fixtures shared by every test file: offline settings, a word-level tokenizer trained in memory, and the
loopback Hub (`tests/hub_server.py`). Plain helpers are in `fixtures.py`."""

import logging
import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(2)

# after the environment above: these import huggingface_hub, which reads it at import
from fixtures import READ_TOKEN, TOKEN  # noqa: E402
from hub_server import FakeHub  # noqa: E402

from dpo_ext.testing import tiny_tokenizer  # noqa: E402


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory, monkeypatch):
    # evaluate and datasets write caches under HF_HOME: keep them out of the user's home
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf_home"))


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture
def hub(tmp_path, monkeypatch, caplog):
    """The fake Hub, with huggingface_hub pointed at it and no token available unless a test passes one."""
    from huggingface_hub import constants

    with FakeHub(users={TOKEN: FakeHub.user("alice", orgs=("team",)),
                        READ_TOKEN: FakeHub.user("alice", role="read")}) as server:
        # The environment sets HF_HUB_OFFLINE=1 so nothing reaches the real Hub; this server is loopback only.
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)  # where the client fetches agent-harnesses
        monkeypatch.setattr(constants, "AGENT_HARNESSES_PATH", str(tmp_path / "agent_harnesses.json"))
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-saved-token"))
        for variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(variable, raising=False)
        caplog.set_level(logging.DEBUG)
        caplog.set_level(logging.DEBUG, logger="huggingface_hub")
        yield server
