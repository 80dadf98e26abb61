"""``python -m pipelines.run``: the pipeline runner from a checkout, the same as ``tfrec pipeline``
(:mod:`tfrec.pipeline.runner`).  Without ``--data-dir`` or ``$TFREC_DATA_DIR``, the raw datasets are looked
for in ``../shared/data`` beside the checkout.

    python -m pipelines.run --config pipelines/configs/movielens-100k.yaml \\
        [--data-dir DIR] [--pipeline-root DIR] [--serving-root DIR] [--from-step STEP]
"""

from __future__ import annotations

import os
import sys

SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared",
                           "data")


def main(argv=None) -> int:
    if not os.environ.get("TFREC_DATA_DIR") and os.path.isdir(SHARED_DATA):
        os.environ["TFREC_DATA_DIR"] = SHARED_DATA
    from tfrec.pipeline.runner import main as run_pipeline

    return run_pipeline(argv, prog="python -m pipelines.run")


if __name__ == "__main__":
    sys.exit(main())
