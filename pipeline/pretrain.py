"""DVC stage ``pretrain``: H-JEPA pretraining on data/prepared (resumes from models/checkpoints).

Also runs under ``torchrun --nproc_per_node N -m pipeline.pretrain`` (DDP).
"""

from hjepa.core.config import Params
from hjepa.train.trainer import pretrain
from pipeline._stage import run_stage


def main(params: Params) -> None:
    pretrain(params)


if __name__ == "__main__":
    run_stage("pretrain", main)
