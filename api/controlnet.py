"""The ControlNet extension's own routes (``/controlnet/...``), which its API clients call beside ``/sdapi/v1``."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from pipelines.hashing import short_hash
from pipelines.preprocessors import PREPROCESSORS, available

from .encoding import decode_image, encode_png

PREFIX = "/controlnet"


class DetectPayload(BaseModel):
    controlnet_module: str = "none"
    controlnet_input_images: list[str] = Field(default_factory=list)
    controlnet_processor_res: int = 512
    controlnet_threshold_a: float | None = None
    controlnet_threshold_b: float | None = None


def _sliders(name: str) -> list[dict[str, Any]]:
    module = PREPROCESSORS[name]
    sliders = [{"name": "Preprocessor Resolution", "value": 512, "min": 64, "max": 2048, "step": 8}]
    sliders += [{"name": s.label, "value": s.value, "min": s.minimum, "max": s.maximum, "step": s.step}
                for s in (module.threshold_a, module.threshold_b) if s is not None]
    return sliders if module.takes_resolution else sliders[1:]


def create_controlnet_router(services, auth, route_class) -> APIRouter:
    router = APIRouter(prefix=PREFIX, route_class=route_class, dependencies=[Depends(auth)], tags=["controlnet"])
    registry, preprocessors = services.registry, services.engine.preprocessors

    @router.get("/version")
    def version():
        return {"version": 2}

    @router.get("/model_list")
    def model_list():
        """Models in ``models/ControlNet`` as "name [hash]", the form the extension lists and accepts."""
        return {"model_list": [f"{name} [{short_hash(registry.resolve_controlnet(name).source)}]"
                               for name in registry.controlnet_names()]}

    @router.get("/module_list")
    def module_list(alias_names: bool = False):
        """Preprocessors whose weights are on disk, with their sliders."""
        names = available(registry.models_dir)
        return {"module_list": names, "module_detail": {
            name: {"model_free": name == "none", "sliders": _sliders(name)} for name in names}}

    @router.post("/detect")
    def detect(payload: DetectPayload):
        """Run a preprocessor on each picture; the control maps come back as base64 PNGs."""
        images = [decode_image(data, f"controlnet_input_images[{i}]")
                  for i, data in enumerate(payload.controlnet_input_images)]
        maps = [preprocessors.run(payload.controlnet_module, image, payload.controlnet_processor_res,
                                  payload.controlnet_threshold_a, payload.controlnet_threshold_b) for image in images]
        return {"images": [encode_png(m) for m in maps], "info": "Success"}

    return router
