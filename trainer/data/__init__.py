"""Curriculum data path of the trainer: exact bucket mixing over MDS corpora, and chat SFT data.

See ``docs/trainer_data.md``.
"""

from trainer.data.curriculum import CurriculumConfig, MixScheduler, Phase, load_curriculum, plan_counts
from trainer.data.loader import CurriculumLoader, SFTLoader
from trainer.data.sft import SFTDataError, SFTDataset

__all__ = [
    "Phase",
    "CurriculumConfig",
    "load_curriculum",
    "plan_counts",
    "MixScheduler",
    "CurriculumLoader",
    "SFTLoader",
    "SFTDataset",
    "SFTDataError",
]
