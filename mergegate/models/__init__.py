"""How any part of mergegate finds a model: references, Hub pinning and offline resolution, local
directories, weight fingerprints (with the one hash cache) and chat templates.

The bottom room above the foundation (``errors``, ``redact``, ``atomic``): merging, audit, weighting,
gate and batch import it; it imports none of them. Heavy libraries (huggingface_hub) are imported
on first use.
"""

from __future__ import annotations

from mergegate.models.chat_template import read_chat_template
from mergegate.models.fingerprints import cache_dir, sha256_file, weights_digest
from mergegate.models.reference import (AdapterReference, ModelReference, looks_like_hub_id, split_reference,
                                        split_revision)
from mergegate.models.resolver import (PICKLE_HINT, ResolvedModel, check_weight_files, hub_offline,
                                       pickle_weight_files, resolve_model)

__all__ = ["ModelReference", "AdapterReference", "split_revision", "ResolvedModel", "resolve_model", "hub_offline", "check_weight_files",
           "pickle_weight_files", "PICKLE_HINT", "sha256_file", "weights_digest", "cache_dir",
           "read_chat_template", "looks_like_hub_id", "split_reference"]
