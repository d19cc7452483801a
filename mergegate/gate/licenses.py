"""The merge's license, derived from what its constituents declare. Never guessed.

Each constituent's license is read from its model card front matter (``license``,
``license_name``, ``license_link``) or, failing that, a ``license`` key in ``config.json``. The
merge gets a license only when every constituent declares the same one; otherwise the card shows
the conflict (or the unknowns) and its front matter carries no ``license``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, NamedTuple

from mergegate.gate.report import LicenseInfo

log = logging.getLogger(__name__)


class DeclaredLicense(NamedTuple):
    license: str
    name: str | None = None
    link: str | None = None


def read_card_metadata(readme: str | Path | None) -> dict[str, Any]:
    """A model card's YAML front matter, found by huggingface_hub's own rule (``metadata_load``'s
    ``REGEX_YAML_BLOCK`` over the text read as ``utf-8-sig``, so cards with a BOM, a leading blank
    line or CRLF line ends are read) and decoded by the bounded YAML loader (cards come from the
    Hub: size, alias expansion and depth are limited). ``{}`` when there is none or it cannot be
    read (an unreadable card declares nothing: "unknown", never a guess)."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK

    from mergegate.errors import ConfigError
    from mergegate.safe_yaml import MAX_CARD_BYTES, load_yaml

    if readme is None or not Path(readme).is_file():
        return {}
    try:
        with open(readme, "rb") as handle:  # bounded: a card is text, not gigabytes
            raw = handle.read(MAX_CARD_BYTES + 1)
        if len(raw) > MAX_CARD_BYTES:
            log.info("card %s is larger than %d bytes: its metadata is not read", Path(readme).name,
                     MAX_CARD_BYTES)
            return {}
        match = REGEX_YAML_BLOCK.search(raw.decode("utf-8-sig"))
        data = load_yaml(match.group(2), source=Path(readme).name) if match else None
    except (ConfigError, ValueError, OSError) as exc:  # UnicodeDecodeError is a ValueError
        log.info("unreadable card metadata in %s: %s", Path(readme).name, type(exc).__name__)
        return {}
    return data if isinstance(data, dict) else {}


def read_local_license(directory: str | Path) -> DeclaredLicense | None:
    """The license declared in ``directory/README.md`` front matter or ``config.json``."""
    directory = Path(directory)
    readme = directory / "README.md"
    if readme.is_file():
        meta = read_card_metadata(readme)
        value = meta.get("license")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if isinstance(value, str) and value.strip():
            return DeclaredLicense(value.strip().lower(), meta.get("license_name"),
                                   meta.get("license_link"))
    config = directory / "config.json"
    if config.is_file():
        try:
            value = json.loads(config.read_text(encoding="utf-8")).get("license")
        except (ValueError, AttributeError, RecursionError, OSError):  # unreadable: license unknown
            value = None
        if isinstance(value, str) and value.strip():
            return DeclaredLicense(value.strip().lower())
    return None


def read_hub_license(repo_id: str, revision: str | None = None) -> DeclaredLicense | None:
    """The license on a Hub model's card (from the local cache when offline); None if unreadable."""
    try:
        from huggingface_hub import hf_hub_download

        from mergegate.models import hub_offline

        path = hf_hub_download(repo_id, "README.md", revision=revision, local_files_only=hub_offline())
    except Exception as exc:  # noqa: BLE001 - a missing card means "unknown", never a guess
        log.info("no readable model card for %s: %s", repo_id, type(exc).__name__)
        return None
    return read_local_license(Path(path).parent)


def derive_license(per_model: dict[str, DeclaredLicense | None]) -> LicenseInfo:
    """Combine the constituents' licenses. Sets ``license`` only when all agree."""
    declared = {m: lic for m, lic in per_model.items() if lic is not None}
    unknown = [m for m, lic in per_model.items() if lic is None]
    distinct = {(lic.license, lic.name) for lic in declared.values()}
    info: dict = {"per_model": {m: (lic.license if lic else None) for m, lic in per_model.items()},
                  "unknown": unknown, "conflict": len(distinct) > 1}
    if len(distinct) == 1 and not unknown:
        first = next(iter(declared.values()))
        info.update(license=first.license, license_name=first.name, license_link=first.link)
    return LicenseInfo(**info)


__all__ = ["DeclaredLicense", "derive_license", "read_card_metadata", "read_local_license", "read_hub_license"]
