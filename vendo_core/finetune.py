"""What a training makes: the weights it returned, stored once by digest, and the fine-tune version
of its destination model (the base version's package and schema, run with those weights). The
replica that ran the training calls this; the router reads the records it writes."""

from __future__ import annotations

from typing import Any

from vendo_core.files import stored_key, stored_ref
from vendo_core.ids import finetune_version_id
from vendo_core.records import COG_VERSION, Version

NO_WEIGHTS = ("The training's output has no weights: its train() must return a Path, or an object "
              "with a `weights` Path (Cog's TrainingOutput)")
WEIGHTS_PREFIX = "weights/"


def weights_of(output: Any) -> str | None:
    """The storage key of a training output's weights: the output itself when it is a file, or
    its `weights` field; None when it names none of our stored weights."""
    if isinstance(output, dict):
        output = output.get("weights")
    key = stored_key(output) if isinstance(output, str) else None
    return key if key and key.startswith(WEIGHTS_PREFIX) else None


def weights_digest(key: str) -> str:
    """The sha256 a weights key was stored under (`weights/{sha256}/{name}`)."""
    return key[len(WEIGHTS_PREFIX):].split("/", 1)[0]


def finetune_version(base: Version, destination: str, weights_key: str, training_id: str) -> Version:
    """The new version of `destination` a training of `base` makes with the weights at
    `weights_key`. A fine-tune of a fine-tune has the same root base: the new weights replace the
    old ones, as Cog runs them (one `COG_WEIGHTS`)."""
    sha = weights_digest(weights_key)
    root = base.base_version or base.id
    return Version(
        id=finetune_version_id(destination, root, sha), model=destination, cog_version=COG_VERSION,
        openapi_schema=base.openapi_schema, traits=base.traits, runtime_env=base.runtime_env,
        package_key=base.package_key, package_digest=base.package_digest, package_sha256=base.package_sha256,
        hardware=base.hardware, max_replicas=base.max_replicas, downscale_delay_s=base.downscale_delay_s,
        upscale_delay_s=base.upscale_delay_s, base_version=root, weights_key=weights_key,
        weights_sha256=sha, training=training_id)


def training_output(destination: str, version_id: str, weights_key: str) -> dict[str, str]:
    """A succeeded training's output, as Replicate writes it (the weights' link made at read time)."""
    return {"version": f"{destination}:{version_id}", "weights": stored_ref(weights_key)}
