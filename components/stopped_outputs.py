"""Where a component that stops the run keeps its report.

TFX deletes a failed component's output folders, so a component that fails the run on purpose
(PairExampleGen over its quarantine limit, DataValidationGate on anomalies) first writes its
report to a sibling folder, `stopped-<execution id>`, which readers find from the pipeline root.
"""

from __future__ import annotations

import os
from typing import Iterable, Optional

_PREFIX = "stopped-"


def stopped_dir(output_uri: str) -> str:
    """The kept copy of output folder `output_uri` (<root>/<component>/<key>/<execution id>)."""
    return os.path.join(os.path.dirname(output_uri), _PREFIX + os.path.basename(output_uri))


def find_stopped(pipeline_roots: Iterable[str], component_id: str, output_key: str,
                 execution_id: int) -> Optional[str]:
    """The kept report of execution `execution_id` of `component_id`, under the first of
    `pipeline_roots` that holds it; None when it stopped without one."""
    for root in pipeline_roots:
        folder = stopped_dir(os.path.join(root, component_id, output_key, str(execution_id)))
        if os.path.isdir(folder):
            return folder
    return None
