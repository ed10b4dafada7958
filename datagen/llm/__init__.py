"""LLM stage of datagen: rubric labels, rephrasing, refusals, moral education, aligned-behaviour data."""
