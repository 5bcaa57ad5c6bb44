"""DVC stage ``validate``: check ``params.yaml`` with the project's schema before any other stage.

Why a stage: DVC checks a stage's ``params:`` only when it reaches that stage, and a key missing
from params.yaml (a typo) then fails with DVC's own "Parameters ... are missing", without the
"did you mean" hint. Every other stage depends on this stage's record, so ``dvc repro`` and
``dvc exp run`` (workspace, ``--temp``, ``--queue``) run it first; a bad params file stops the
pipeline here, with the key and a suggestion, before any other stage runs. The record it writes
has the same content for every valid params file, so it never reruns a later stage by itself.
"""

from hjepa.core.config import Params
from pipeline._stage import run_stage


def body(params: Params) -> None:
    """Nothing to do beyond what ``run_stage`` does: load and validate the params."""


if __name__ == "__main__":
    run_stage("validate", body)
