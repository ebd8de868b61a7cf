"""`/predict?tta=true`: each upload's outputs combined over its views by `inference.tta.Plan`.

Each view goes through the micro-batcher as one image, so a TTA request shares batches with
everyone else's and costs what `view_count` says in model time; decoding is done once.
"""

from __future__ import annotations

import asyncio

from cnnclf.inference.tta import plan


async def tta_scores(service, images: list[tuple[bytes, str]]):
    """`Service.scores` with test-time augmentation: one averaged output row per upload."""
    tta = plan(service.bundle)
    per_image = tta.count
    service.batcher.expect(per_image * len(images))

    async def one(data, name):
        try:
            pixels = await service.decode(data, name)
        except BaseException:
            service.batcher.expect(-per_image)
            raise
        batch = tta.views(pixels[None])
        rows = await asyncio.gather(*(service.batcher.submit(view[0]) for view in batch))
        return tta.combine([row[None] for row in rows])[0]

    return await asyncio.gather(*(one(data, name) for data, name in images))
