"""Hardware SKUs from `configs/hardware.yaml`, validated strictly so a typo fails loudly."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vendo_core.billing import price_nanos
from vendo_core.errors import InvalidRequest

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "configs" / "hardware.yaml"


class Sku(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    num_cpus: float = Field(ge=0)
    num_gpus: float = Field(ge=0)
    memory: int | None = Field(default=None, ge=0, description="bytes")
    price_per_second: float = Field(ge=0)

    @model_validator(mode="after")
    def _price_in_nanos(self):
        price_nanos(self.price_per_second)  # a price finer than a nano-dollar is refused at load
        return self

    @property
    def price_nanos(self) -> int:
        """The per-second price in integer nano-dollars (what billing computes with)."""
        return price_nanos(self.price_per_second)

    def ray_actor_options(self) -> dict:
        opts: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.memory:
            opts["memory"] = self.memory
        return opts


class HardwareConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    default: str
    skus: dict[str, Sku]

    @model_validator(mode="after")
    def _default_exists(self):
        if self.default not in self.skus:
            raise ValueError(f"default SKU {self.default!r} is not among skus")
        return self

    def get(self, sku: str | None) -> Sku:
        return self.skus[sku or self.default]

    def pick(self, value: object, field: str = "hardware") -> str:
        """`value` as a known SKU name (None: the default); InvalidRequest naming `field` otherwise."""
        if value is None:
            return self.default
        if not isinstance(value, str) or value not in self.skus:
            raise InvalidRequest(field, f"unknown SKU {value!r}; one of {sorted(self.skus)}")
        return value


def load_hardware(path: Path | None = None) -> HardwareConfig:
    """Read and validate a hardware file; raises ValueError naming the file and the field."""
    path = Path(path or DEFAULT_PATH)
    try:
        return HardwareConfig.model_validate(yaml.safe_load(path.read_text()))
    except ValidationError as e:
        raise ValueError(f"{path}: {e}") from e


@lru_cache(maxsize=4)
def hardware(path: str | None = None) -> HardwareConfig:
    return load_hardware(Path(path) if path else None)


def skus_for(settings) -> HardwareConfig:
    """The SKUs `settings.hardware_config` names (default: configs/hardware.yaml), read once."""
    return hardware(str(settings.hardware_config) if settings.hardware_config else None)
