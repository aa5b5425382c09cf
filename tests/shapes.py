"""Complete answer shapes shared by the model tests and the shape fuzzing.

Every field of every nested Struct holds a value, so that setting one to
null, or to any other JSON value, is a change a test can see.
"""

from __future__ import annotations

from typing import Any

from sora_async import Encodings

FULL_ENCODING: dict[str, Any] = {
    "path": "https://cdn/v.mp4",
    "size": 1,
    "width": 2,
    "height": 3,
    "duration_secs": 4.5,
    "ssim": 0.9,
}
FULL_GENERATION: dict[str, Any] = {
    "id": "gen_1",
    "url": "https://cdn/u.mp4",
    "prompt": "p",
    "seed": 7,
    "width": 854,
    "height": 480,
    "n_frames": 150,
    "encodings": {variant: dict(FULL_ENCODING) for variant in Encodings.__struct_fields__},
}
FULL_VIDEO: dict[str, Any] = {
    "id": "vid_1",
    "status": "succeeded",
    "prompt": "p",
    "width": 854,
    "height": 480,
    "n_frames": 150,
    "n_variants": 1,
    "progress_pct": 1.0,
    "progress_pos_in_queue": 0,
    "estimated_queue_wait_time": 3.0,
    "failure_reason": "none",
    "generations": [FULL_GENERATION],
}
