"""Config of the LLM stage (extended by the LLM stage implementation)."""

from dataclasses import dataclass


@dataclass
class LLMConfig:
    enabled: bool = False
