"""DVC stage ``pretrain``: H-JEPA pretraining on data/prepared (resumes from models/checkpoints).

Also runs under ``torchrun --nproc_per_node N -m pipeline.pretrain`` (DDP). Under ``dvc exp run``
the TensorBoard run is named after the experiment (``DVC_EXP_NAME``, set by DVC).
"""

import os

from hjepa.core.config import Params
from hjepa.train.trainer import pretrain
from pipeline._stage import run_stage


def main(params: Params) -> None:
    pretrain(params, experiment=os.environ.get("DVC_EXP_NAME") or "workspace")


if __name__ == "__main__":
    run_stage("pretrain", main)
