"""Batch test set-up: the fake Hub (a local HF cache + a local HTTP server), audit options for the
toy fleet, and a headless Chromium (installed with apt when missing and running as root)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from _batch_fakehub import FakeHub, FakeHubServer, build_fake_hub

@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """The toy models are tiny: one intra-op thread is as fast and does not spin on a shared CPU."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def fake_hub(toy_fleet: Path, tmp_path_factory: pytest.TempPathFactory) -> FakeHub:
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return build_fake_hub(toy_fleet, tmp_path_factory.mktemp("fakehub"))
    finally:
        torch.set_num_threads(n)


def _use_cache(monkeypatch: pytest.MonkeyPatch, hub: Path) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))


@pytest.fixture
def hub_server(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHubServer]:
    """huggingface_hub pointed at the fake Hub over HTTP; HF_HUB_OFFLINE=0 only inside this fixture."""
    from huggingface_hub import constants

    with FakeHubServer(fake_hub) as server:
        _use_cache(monkeypatch, fake_hub.hub)
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        yield server


@pytest.fixture
def hub_offline(fake_hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    """The fake Hub's cache with HF_HUB_OFFLINE=1 (no server)."""
    from huggingface_hub import constants

    _use_cache(monkeypatch, fake_hub.hub)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return fake_hub


# -- headless Chromium ------------------------------------------------------------------------
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def _find_chromium() -> str | None:
    env = os.environ.get("MERGEGATE_CHROMIUM")
    if env and Path(env).is_file():
        return env
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    return None


def _apt_install_chromium() -> str:
    """Install Debian's chromium (root only). Returns the log tail for the failure message."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    log = []
    for cmd in (["apt-get", "update", "-qq"],
                ["apt-get", "install", "-y", "-q", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600",
                 "chromium"]):
        try:
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            log.append(f"{' '.join(cmd)}: {exc}")
            break
        log.append(f"{' '.join(cmd)} -> {done.returncode}\n{done.stderr[-1500:]}")
        if done.returncode != 0:
            break
    return "\n".join(log)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"headless browser test must run under CI but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def chromium() -> str:
    """Path of a Chromium binary; installs Debian's package when missing and running as root.
    Skips only when that is impossible and CI is unset (under CI=true it fails instead)."""
    found = _find_chromium()
    if found is None and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        log = _apt_install_chromium()
        found = _find_chromium()
        if found is None:
            _unavailable(f"installing chromium with apt-get failed:\n{log}")
    if found is None:
        _unavailable("no chromium binary and not root (cannot apt-get install chromium)")
    try:
        import websocket  # noqa: F401 - websocket-client, the DevTools protocol transport
    except ImportError:
        _unavailable("websocket-client is not installed (pip install 'mergegate[test]')")
    return str(found)
